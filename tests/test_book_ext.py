"""The book's docstring extension: plain-text formula blocks become literal blocks."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
from kexue_docstrings import literal_formula_blocks  # noqa: E402


def test_formula_block_after_prose_becomes_literal():
    doc = ["The gradient measure is", "", "    (1/2) sum |dp_i/ds_j| = alpha (1 - sum p^2),", "", "and so on."]
    assert literal_formula_blocks(doc) == [
        "The gradient measure is ::", "", "    (1/2) sum |dp_i/ds_j| = alpha (1 - sum p^2),", "", "and so on."]


def test_colon_becomes_double_colon_and_bars_escaped_outside_literals():
    doc = ["mean of |x| over ``|x|``:", "", "    S_0(x) = mean|x|"]
    assert literal_formula_blocks(doc) == ["mean of \\|x\\| over ``|x|``::", "", "    S_0(x) = mean|x|"]


def test_existing_literal_blocks_and_field_lists_are_left_alone():
    doc = ["Example::", "", "    a | b", "", ":param x: the input", "    continued", "", ".. note:: keep"]
    assert literal_formula_blocks(doc) == doc
