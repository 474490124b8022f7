"""DGHDGH's graph generator and node/edge message-passing GNN on complete batch graphs.

README.md, section Model. The reference keeps edges as an index list (E = B², row-major:
edge (r, c) = r·B + c) and uses torch_scatter; on a complete graph every scatter over r or c is a sum
over one axis of the (B, B, K) edge tensor, and the segment softmax over the incoming edges of c is a
softmax over the r axis, so edges stay a (B, B, K) tensor here: edges[r, c] = w_rc.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SOFTMAX_MODES = ("plus_one", "standard")


def edge_attributes(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """w[i, j] = x̃_i ⊙ ỹ_j (B, B', K) for rows centred by their mean and scaled to unit norm (y = x if None).

    Σ_k w[i, j] is the Pearson correlation of x_i and y_j. Self pairs are included.
    """
    def centred(a: torch.Tensor) -> torch.Tensor:
        a = a - a.mean(dim=1, keepdim=True)
        return a / a.norm(dim=1, keepdim=True)

    x_t = centred(x)
    y_t = x_t if y is None else centred(y)
    return x_t[:, None, :] * y_t[None, :, :]


def edge_softmax(scores: torch.Tensor, dim: int, mode: str = "plus_one") -> torch.Tensor:
    """Softmax of each node's incoming edges along `dim`.

    `plus_one` (reconstruction of the missing reference helper, the GNN-ReID form with margin 0):
    w_e = exp(s_e) / (1 + Σ_e' exp(s_e')), computed with the maximum clamped at >= 0; weights sum to
    less than 1 and a node whose edges are all masked (-1e9) aggregates ~0. `standard`: plain softmax.
    """
    if mode == "standard":
        return torch.softmax(scores, dim=dim)
    if mode != "plus_one":
        raise ValueError(f"unknown softmax mode {mode!r}")
    top = scores.amax(dim=dim, keepdim=True).clamp(min=0).detach()
    exp = (scores - top).exp()
    return exp / (exp.sum(dim=dim, keepdim=True) + (-top).exp())


def _xavier(*layers: nn.Linear) -> None:
    for layer in layers:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)


def _ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.LayerNorm(4 * dim), nn.Linear(4 * dim, dim))


class NodeAttention(nn.Module):
    """Multi-head dot-product attention of each node c over the edges (r, c), label-sharing pairs masked."""

    def __init__(self, dim: int, heads: int, softmax: str):
        super().__init__()
        self.heads, self.softmax = heads, softmax
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        _xavier(self.q, self.k, self.v, self.out)

    def forward(self, source: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`source` (B, K) gives keys and values (node r), `target` (B, K) the queries (node c); mask[r, c]."""
        b, dim = source.shape
        head_dim = dim // self.heads
        q = self.q(target).view(b, self.heads, head_dim)
        k = self.k(source).view(b, self.heads, head_dim)
        v = self.v(source).view(b, self.heads, head_dim)
        scores = torch.einsum("rhd,chd->hrc", k, q) / math.sqrt(head_dim)
        weights = edge_softmax(scores.masked_fill(mask, -1e9), dim=1, mode=self.softmax)
        return self.out(torch.einsum("hrc,rhd->chd", weights, v).reshape(b, dim))


class NodeUpdate(nn.Module):
    """Node model: attention over incoming edges, plus the summed messages of each node's outgoing edges."""

    def __init__(self, dim: int, heads: int, softmax: str):
        super().__init__()
        self.attention = NodeAttention(dim, heads, softmax)
        self.edge_to_node = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.norm = nn.Sequential(nn.GELU(), nn.LayerNorm(dim))  # one module, used three times
        self.ffn = _ffn(dim)

    def forward(self, nodes: torch.Tensor, queries: torch.Tensor | None, edges: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """`nodes` (B, K): X nodes; `queries`: the Y nodes of a cross graph (None: intra graph). Returns (B, K)."""
        h = self.norm(nodes + self.attention(nodes, nodes if queries is None else queries, mask))
        h = self.norm(h + self.edge_to_node(edges).sum(dim=1))  # scatter_add over r: sum of row i's edges
        return self.norm(self.ffn(h) + h)


class EdgeUpdate(nn.Module):
    """Edge model: edge (i, j) attends (one head, query w_ij) over the two tokens [m_i, m_j]."""

    def __init__(self, dim: int, dropout: float = 0.1):
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        _xavier(self.q, self.k, self.v)
        self.dropout = nn.Dropout(dropout)
        self.node_to_edge = nn.Sequential(nn.Linear(dim, dim), nn.GELU())
        self.norm = nn.Sequential(nn.GELU(), nn.LayerNorm(dim))
        self.ffn = _ffn(dim)

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """`nodes` (B, K), `edges` (B, B, K) -> new edges (B, B, K).

        The k/v projections are applied per node and broadcast, instead of to the (E, 2, K) token pairs.
        """
        m = self.node_to_edge(nodes)
        q, k, v = self.q(edges), self.k(m), self.v(m)
        scale = math.sqrt(edges.shape[-1])
        scores = torch.stack([(q * k[:, None, :]).sum(-1), (q * k[None, :, :]).sum(-1)], dim=-1) / scale
        p = self.dropout(torch.softmax(scores, dim=-1))
        attended = p[..., :1] * v[:, None, :] + p[..., 1:] * v[None, :, :]
        e = self.norm(attended + edges)
        return self.norm(self.ffn(e) + e)


class GNNDecoder(nn.Module):
    """reduce_fc, `layers` × (node update, edge update), BN-neck heads.

    forward -> (node_preds (B, C), edge_reprs λ (B, B, K) in (0, 1)). The BN biases are frozen (zero).
    """

    def __init__(self, dim: int, num_classes: int, layers: int = 2, heads: int = 4, softmax: str = "plus_one"):
        super().__init__()
        self.reduce_fc = nn.Linear(dim, dim)
        self.node_layers = nn.ModuleList(NodeUpdate(dim, heads, softmax) for _ in range(layers))
        self.edge_layers = nn.ModuleList(EdgeUpdate(dim) for _ in range(layers))
        self.edge_bn, self.node_bn = nn.BatchNorm1d(dim), nn.BatchNorm1d(dim)
        for bn in (self.edge_bn, self.node_bn):
            bn.bias.requires_grad_(False)
        self.fc = nn.Linear(dim, dim)
        self.cls = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, edges: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Graph of X nodes `x` (B, K) and, for a cross graph, Y nodes `y`; `mask[r, c]` True = no attention."""
        nodes = self.reduce_fc(x)
        queries = None if y is None else self.reduce_fc(y)
        for node_layer, edge_layer in zip(self.node_layers, self.edge_layers):
            nodes = node_layer(nodes, queries, edges, mask)
            queries = None  # only B nodes remain after the first layer
            edges = edge_layer(nodes, edges)
        b, _, dim = edges.shape
        edge_reprs = torch.sigmoid(self.fc(self.edge_bn(edges.reshape(b * b, dim)))).view(b, b, dim)
        return self.cls(self.node_bn(nodes)), edge_reprs
