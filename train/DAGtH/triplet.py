"""AdaTriplet on cosine similarities: automatic margin ε, optional anchor–negative term with automatic β.

README.md, section Loss (the reference `utils/loss.py` + `utils/miner.py`). For a similarity
matrix C between anchors (rows) and candidates (columns), the triplets are every (a, p, n) with p a positive and
n a negative of a, Δ_apn = C_ap − C_an, and per call (`update="batch"`, the reference; "epoch" and "fixed" below)

    ε = clip(mean_T Δ / K_Δ, 0, 0.5)                     (detached; kept when the batch has no triplet)
    L_trip = mean over mined triplets of (C_an − C_ap + ε)   mined "all": Δ ≤ ε, "hard": Δ ≤ 0, "semi-hard": 0 < Δ ≤ ε
    β = 1 + (mean C_an over unique AN pairs − 1) / K_an,  L_an = mean over pairs with C_an ≥ β of (C_an − β)

The reference enumerates the triplets (an n³ mask and index tensors of up to n³ entries). Here they are
never materialised: per anchor the negatives' similarities are sorted once, and the number and the sum of the
C_an inside each positive's mining window come from a binary search and prefix sums (O(n² log n) time,
O(n²) memory, the same value and gradient; test_dagth.py checks it against the enumeration).
"""
from __future__ import annotations

import torch
from torch import nn

from train.common import label_similarity

MINING = ("all", "hard", "semi-hard")
MARGIN_UPDATES = ("batch", "epoch", "fixed")


def label_masks(labels_a: torch.Tensor, labels_b: torch.Tensor, same_items: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean masks: ≥ 1 shared label / none; the diagonal is no positive when `same_items`."""
    share = label_similarity(labels_a.float(), labels_b.float())
    positive = share.clone()
    if same_items:
        positive.fill_diagonal_(False)
    return positive, ~share


class AdaptiveTriplet(nn.Module):
    """One AdaTriplet miner + loss. ε and β are buffers: checkpointed, and kept when a batch cannot update them.

    `update` says when ε and β change: "batch" (the DAGtH repo's miner: from the current batch, before it is
    mined), "epoch" (the AdaTriplet package: the batches of an epoch use the values estimated from all triplets /
    AN pairs of the previous epoch, `end_epoch()`; the first epoch uses the initial values) or "fixed" (never: ε₀
    and β₀ throughout, what DScPH-main's re-created miner amounts to).
    """

    def __init__(self, epsilon: float = 0.25, beta: float = 0.0, k_delta: float = 2.0, k_an: float = 2.0,
                 an_weight: float = 1.0, use_an: bool = False, mining: str = "all", update: str = "batch"):
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"mining must be one of {MINING}, got {mining!r}")
        if update not in MARGIN_UPDATES:
            raise ValueError(f"update must be one of {MARGIN_UPDATES}, got {update!r}")
        self.k_delta, self.k_an, self.an_weight, self.use_an, self.mining = k_delta, k_an, an_weight, use_an, mining
        self.update = update
        self.register_buffer("epsilon", torch.tensor(float(epsilon)))
        self.register_buffer("beta", torch.tensor(float(beta)))
        self._stats: torch.Tensor | None = None  # update="epoch": Σ Δ, #triplets, Σ C_an, #AN pairs of the epoch

    @torch.no_grad()
    def end_epoch(self) -> None:
        """update="epoch": ε and β from the epoch's statistics (kept when it had no triplet / AN pair); reset."""
        if self.update == "epoch":
            delta_sum, triplets, an_sum, pairs = self._stats.tolist() if self._stats is not None else [0.0] * 4
            if triplets > 0:
                self.epsilon.fill_(min(max(delta_sum / triplets / self.k_delta, 0.0), 0.5))
            if pairs > 0:
                self.beta.fill_(1 + (an_sum / pairs - 1) / self.k_an)
        self._stats = None

    def _accumulate(self, offset: int, total: torch.Tensor, count: torch.Tensor) -> None:
        if self._stats is None:
            self._stats = total.new_zeros(4, dtype=torch.float64)
        self._stats[offset:offset + 2] += torch.stack([total.double(), count.double()])

    def forward(self, sim: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                symmetric: bool) -> dict[str, torch.Tensor]:
        """Loss on a similarity matrix `sim` (anchors x candidates) with boolean `positive`/`negative` masks.

        `symmetric`: rows and columns are the same items (the AN pairs are then unordered, counted once).
        """
        zero = sim.new_zeros(())
        pos_count, neg_count = positive.sum(1).double(), negative.sum(1).double()
        num_triplets = (pos_count * neg_count).sum()
        if num_triplets == 0:
            return {"loss": zero, "triplet": zero, "an": zero, "epsilon": self.epsilon.clone(),
                    "beta": self.beta.clone(), "triplets": num_triplets.float(), "mined": zero}
        an = self._anchor_negative(sim, negative, pos_count > 0, symmetric) if self.use_an else zero
        triplet, mined = self._triplet(sim, positive, negative, pos_count, neg_count, num_triplets)
        return {"loss": triplet + self.an_weight * an, "triplet": triplet, "an": an, "epsilon": self.epsilon.clone(),
                "beta": self.beta.clone(), "triplets": num_triplets.float(), "mined": mined}

    def _triplet(self, sim, positive, negative, pos_count, neg_count, num_triplets):
        s = sim.detach().double()
        sum_pos, sum_neg = (s * positive).sum(1), (s * negative).sum(1)
        delta_sum = (neg_count * sum_pos - pos_count * sum_neg).sum()
        if self.update == "batch":
            self.epsilon.copy_((delta_sum / num_triplets / self.k_delta).clamp(0, 0.5))
        elif self.update == "epoch" and self.training:
            self._accumulate(0, delta_sum, num_triplets)
        epsilon = self.epsilon.to(sim.dtype)

        # per anchor: the negatives' similarities in ascending order (non-negatives first, as -inf)
        ordered = sim.masked_fill(~negative, float("-inf")).sort(dim=1).values
        finite = torch.where(ordered.isfinite(), ordered, torch.zeros_like(ordered))
        prefix = torch.cat([finite.new_zeros(len(sim), 1), finite.cumsum(1)], dim=1)  # prefix[:, k] = Σ first k
        keys = ordered.detach().contiguous()
        # mining window of C_an for each (anchor, positive): [low, high)
        low = sim.detach() if self.mining == "hard" else sim.detach() - epsilon
        start = torch.searchsorted(keys, low.contiguous(), side="left")
        if self.mining == "semi-hard":
            end = torch.searchsorted(keys, sim.detach().contiguous(), side="left")
        else:
            end = torch.full_like(start, sim.shape[1])
        count = ((end - start).clamp(min=0) * positive).to(sim.dtype)
        window_sum = (prefix.gather(1, end) - prefix.gather(1, start)) * positive
        mined = count.sum()
        if mined == 0:
            return sim.new_zeros(()), mined
        total = (window_sum - count * (sim - epsilon)).sum()
        return total / mined, mined

    def _anchor_negative(self, sim, negative, has_positive, symmetric):
        pairs = negative & has_positive[:, None]  # (a, n) of at least one triplet, each once
        if symmetric:
            pairs = (pairs | pairs.T).triu()
        values = sim.detach()[pairs]
        if values.numel() == 0:
            return sim.new_zeros(())
        if self.update == "batch":
            self.beta.copy_(1 + (values.double().mean() - 1) / self.k_an)
        elif self.update == "epoch" and self.training:
            self._accumulate(2, values.double().sum(), torch.tensor(values.numel(), device=values.device))
        beta = self.beta.to(sim.dtype)
        kept = pairs & (sim.detach() >= beta)
        if not kept.any():
            return sim.new_zeros(())
        return (sim[kept] - beta).mean()
