"""Caption tokenisation: the 32-token layout of open_clip's tokenizer, remembered per caption."""
import open_clip
import torch

from utils.text import CaptionTokenizer

CAPTIONS = ["a red circle and a blue star", "fish &amp; chips", "a red circle and a blue star", "", "café"]


def test_same_ids_as_open_clip_with_repeats_and_html_entities():
    reference = open_clip.SimpleTokenizer(context_length=32)(CAPTIONS)
    tokenizer = CaptionTokenizer(32)
    first, again = tokenizer(CAPTIONS), tokenizer(list(reversed(CAPTIONS)))
    assert first.dtype == torch.int64 and first.shape == (5, 32)
    assert torch.equal(first, reference) and torch.equal(again, reference.flip(0))
    assert len(tokenizer._memo) == 4  # distinct captions


def test_returned_ids_are_copies_of_the_memo():
    tokenizer = CaptionTokenizer(32)
    tokenizer(["a dog"])[0, 1] = -5
    assert tokenizer(["a dog"])[0, 1] != -5


def test_memo_is_bounded_and_full_memo_still_tokenizes():
    reference = open_clip.SimpleTokenizer(context_length=32)(CAPTIONS)
    tokenizer = CaptionTokenizer(32, memo_size=2)
    assert torch.equal(tokenizer(CAPTIONS[:2]), reference[:2])
    assert torch.equal(tokenizer(CAPTIONS), reference)
    assert len(tokenizer._memo) == 2
    assert tokenizer([]).shape == (0, 32)
