from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from api.schemas import VISIBLE, EvalCaseIn

pytestmark = pytest.mark.unit

# Every character some regex engine (Python's re, pydantic's Rust regex, ECMA's) counts as a space.
SPACES = "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


@pytest.mark.parametrize("space", list(SPACES), ids=[f"U+{ord(c):04X}" for c in SPACES])
def test_a_case_name_of_spaces_alone_is_refused_by_the_model_and_the_schema_alike(
    space: str,
) -> None:
    """A case named only by a character any engine calls a space is refused by the server, and
    the published pattern does not match it either: a client checking the schema agrees."""
    with pytest.raises(ValidationError):
        EvalCaseIn(name=space * 3)
    assert re.search(VISIBLE, space * 3) is None


def test_a_case_name_with_one_visible_character_is_taken() -> None:
    """Spaces around a visible character are fine: the name says something."""
    assert EvalCaseIn(name="\u0085 a\ufeff").name == "\u0085 a\ufeff"
    assert re.search(VISIBLE, "\u0085 a\ufeff") is not None
