"""The coding-theory threshold helpers that proxy and centre methods share."""
import pytest

from train.coding_theory import check_threshold_bits, resolve_threshold
from utils.errors import UserError


def test_resolve_threshold_prefers_the_explicit_value_then_the_table():
    assert resolve_threshold(0.3, 48, 24, "M") == 0.3
    assert resolve_threshold(None, 64, 24, "M") == 0.0  # k = 5: the table's 64-bit entry
    assert resolve_threshold(None, 16, 2, "M") == -1.0


def test_resolve_threshold_outside_the_table_names_the_method_and_the_fix():
    with pytest.raises(UserError, match=r"^M has no coding-theory threshold for 64 bits and 300 classes .*--threshold$"):
        resolve_threshold(None, 64, 300, "M")


def test_check_threshold_bits_refuses_an_unlisted_length_only_without_a_threshold():
    check_threshold_bits(None, 32)
    check_threshold_bits(0.1, 48)
    with pytest.raises(UserError, match="output-dim.*48.*pass --threshold"):
        check_threshold_bits(None, 48)
