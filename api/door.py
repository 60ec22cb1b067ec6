"""What the log cannot hold, or would silently change, is refused at the door, naming where.

PostgreSQL text and jsonb cannot hold NUL; UTF-8 cannot encode a lone UTF-16 surrogate; JSON has
no NaN or infinity (Python's parser accepts them, and 1e400 becomes infinity); deep nesting
exhausts recursion in every layer that walks it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True)
class Refusal:
    location: str
    message: str
    type: str

    def entry(self) -> dict[str, str]:
        return {"location": self.location, "message": self.message, "type": self.type}


class _NonFinite(float):
    """A number JSON cannot carry, kept for the walk to find and name."""


def _parse_constant(text: str) -> float:
    return _NonFinite("nan")


def _parse_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite("nan")


def parse_json(body: bytes) -> Any:
    """The body as the service will read it, with non-finite numbers marked for the walk.
    Raises ValueError when it is not JSON (the route's own parser answers that)."""
    return json.loads(body, parse_constant=_parse_constant, parse_float=_parse_float)


def _string_refusal(text: str, location: str) -> Refusal | None:
    found = UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return Refusal(location, "a NUL character (\\u0000) cannot be stored", "nul_character")
    return Refusal(location, "a lone UTF-16 surrogate cannot be stored", "lone_surrogate")


def refusals(value: Any, location: str, max_depth: int) -> Iterator[Refusal]:
    """Every place in a parsed JSON or TOML value the log cannot hold as given."""
    stack: list[tuple[Any, str, int]] = [(value, location, 0)]
    while stack:
        current, where, depth = stack.pop()
        if depth > max_depth:
            yield Refusal(where, f"nesting deeper than {max_depth} levels", "too_deep")
            continue
        if isinstance(current, str):
            if (refusal := _string_refusal(current, where)) is not None:
                yield refusal
        elif isinstance(current, _NonFinite) or (
            isinstance(current, float) and not math.isfinite(current)
        ):
            yield Refusal(
                where, "NaN, infinite or overflowing numbers cannot be stored", "non_finite"
            )
        elif isinstance(current, dict):
            for key, child in current.items():
                child_where = f"{where}.{key}" if isinstance(key, str) else where
                if isinstance(key, str) and (refusal := _string_refusal(key, where)) is not None:
                    yield Refusal(where, f"a key: {refusal.message}", refusal.type)
                    child_where = f"{where}.{key.encode('utf-8', 'backslashreplace').decode()}"
                stack.append((child, child_where, depth + 1))
        elif isinstance(current, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(current))


def deeper_than(body: bytes, max_depth: int) -> bool:
    """Whether JSON brackets nest deeper than `max_depth`, counted before parsing: a parser
    would exhaust its recursion on what this refuses cheaply."""
    depth = 0
    for match in _BRACKETS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


# Strings (with their escapes) are skipped whole, so brackets inside them do not count.
_BRACKETS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def undecodable(raw: bytes) -> bool:
    """Whether percent-decoded bytes (a path or query) are not UTF-8, or carry NUL."""
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        return True
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
