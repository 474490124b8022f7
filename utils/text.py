"""CLIP BPE tokenisation to the repos' fixed 32-token layout, and the padding mask of that layout."""
from __future__ import annotations

import open_clip
import torch

PAD_ID = 0
SOT_ID = 49406
EOT_ID = 49407


def padding_mask(ids: torch.Tensor) -> torch.Tensor:
    """True at padding positions, i.e. after the EOT token (the largest id of each row).

    Position-based on purpose: id 0 is also the BPE token "!", so `ids == 0` (the references'
    mask) would wrongly hide a real "!" before EOT.
    """
    positions = torch.arange(ids.shape[-1], device=ids.device)
    return positions > ids.argmax(dim=-1, keepdim=True)


class CaptionTokenizer:
    """`[SOT] + first (max_words - 2) BPE ids + [EOT]`, zero-padded to `max_words` (open_clip's SimpleTokenizer).

    The vocabulary file ships inside the open_clip wheel; nothing is downloaded. Each distinct caption is
    tokenised once per process and remembered (up to `memo_size` captions): BPE with ftfy's text repair costs
    ~0.2 ms a caption, the largest per-item cost of an epoch read from the image cache, and persistent loader
    workers see the same captions every epoch.
    """

    def __init__(self, max_words: int = 32, memo_size: int = 2**20):
        self.max_words = max_words
        self.memo_size = memo_size
        self._tokenizer = open_clip.SimpleTokenizer(context_length=max_words)
        self._memo: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """Token ids (len(texts), max_words), int64."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            ids = self._tokenizer(missing)
            if len(self._memo) + len(missing) > self.memo_size:
                lookup = dict(zip(missing, ids))
                return torch.stack([self._memo[t] if t in self._memo else lookup[t] for t in texts])
            self._memo.update(zip(missing, ids))
        if not texts:
            return torch.zeros((0, self.max_words), dtype=torch.long)
        return torch.stack([self._memo[t] for t in texts])
