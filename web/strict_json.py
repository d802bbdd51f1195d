"""Strict JSON: a body that cannot be parsed is a 400 naming where it broke, never a 500.

pydantic-core's parser (jiter) refuses what Python's `json` lets through or
chokes on: integers past 4300 digits ("number out of range", where `int()`
would raise), nesting past 200 levels (where `json` overflows the stack),
lone surrogates (which later fail to encode). Non-finite numbers (`NaN`,
`Infinity`, `1e400`) parse as floats so that the request model names the
field they are in, like any bad value. A syntax error is reported with the
top-level field it occurred in, found from the parser's position.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic_core import from_json

from web.errors import ApiError

_POSITION = re.compile(r" at line (\d+) column (\d+)$")
# The JSON tokens that change nesting or separate keys from values; strings whole, so that
# brackets and colons inside them are skipped (C regex: cheap even over megabytes).
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}:]')


class JsonSyntaxError(Exception):
    """Unparseable JSON: the parser's reason (fixed words and a position, never content)."""

    def __init__(self, reason: str, field: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field  # the top-level key it broke in, when there is one


def parse(raw: bytes) -> Any:
    """The document, with non-finite numbers as floats; JsonSyntaxError otherwise."""
    try:
        return from_json(raw, allow_inf_nan=True)
    except ValueError as exc:
        reason = str(exc)
        match = _POSITION.search(reason)
        field = None if match is None else top_level_key(
            raw, _offset(raw, int(match[1]), int(match[2])))
        raise JsonSyntaxError(reason, field) from None


def _offset(raw: bytes, line: int, column: int) -> int:
    """The byte offset of a 1-based line and byte column."""
    start = 0
    for _ in range(line - 1):
        start = raw.find(b"\n", start) + 1
        if start == 0:
            return len(raw)
    return start + column - 1


def top_level_key(raw: bytes, offset: int) -> str | None:
    """The key of the top-level object member that the byte at offset lies in, if any."""
    depth = 0
    key: bytes | None = None
    previous: bytes | None = None
    for token in _TOKEN.finditer(raw, 0, offset):
        text = token[0]
        if text in (b"{", b"["):
            depth += 1
        elif text in (b"}", b"]"):
            depth -= 1
            if depth == 1:
                key = None
        elif text == b":" and depth == 1 and previous is not None and previous[:1] == b'"':
            key = previous
        previous = text
    if depth < 1 or key is None:
        return None
    try:
        name = from_json(key)
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def syntax_error(exc: JsonSyntaxError, known: frozenset[str], prefix: str = "") -> ApiError:
    """The 400 for unparseable JSON; a field is named only if the endpoint knows it."""
    if exc.field is not None and exc.field in known:
        return ApiError(400, f"'{prefix}{exc.field}' is not valid JSON: {exc.reason}.",
                        param=prefix + exc.field, code="invalid_json")
    return ApiError(400, f"The body is not valid JSON: {exc.reason}.", param=prefix or None,
                    code="invalid_json")
