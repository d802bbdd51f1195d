"""Reading a batch body (JSON Lines, or a JSON array) and validating every line up front.

Each line is `{"custom_id": str, "body": {native fields + "model"}}`, checked
exactly as the native API checks a request. One bad line rejects the batch;
the error lists bad lines by number and field, never their content.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from web.errors import ApiError
from web.generate import check_prompt
from web.generation_params import GenerationInput, find_model, parse_native
from web.services import Services

MAX_BATCH_LINES = 1000
MAX_CUSTOM_ID_CHARS = 64
# Bad lines named in one error message; the count covers the rest.
MAX_LISTED_LINES = 20
LINE_FIELDS = frozenset({"custom_id", "body"})
# Image inputs of the native API; a batch is text-to-image only.
UNSUPPORTED_BODY_FIELDS = ("init_image", "mask_image")


@dataclass(frozen=True, slots=True)
class BadLine:
    number: int  # 1-based
    field: str
    reason: str  # a fixed message that never quotes the line


class LineError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def validate_body(services: Services, body: Any) -> GenerationInput:
    """A line's request body, checked as POST /v1/inference/{model} checks it."""
    if not isinstance(body, dict):
        raise LineError("body", "'body' must be a JSON object.")
    for name in UNSUPPORTED_BODY_FIELDS:
        if name in body:
            raise LineError(f"body.{name}", f"'{name}' is not supported in a batch.")
    try:
        spec = find_model(services.engine.specs, body.get("model"), services.default_model)
        gen = parse_native(spec, body)
        check_prompt(services, gen)
    except ApiError as exc:
        raise LineError(f"body.{exc.param}" if exc.param else "body", exc.message) from None
    if gen.response_format != "url":
        # Results are stored images; inline data would put images in the output file.
        raise LineError("body.output", "'output' must be 'url' in a batch.")
    return gen


def parse_batch(services: Services, raw: bytes) -> list[bytes]:
    """The normalized lines (JSON bytes, with the model and seed fixed), or a 4xx."""
    entries = _entries(raw)
    if not entries:
        raise ApiError(400, "The batch has no lines.", param="lines", code="empty_batch")
    if len(entries) > MAX_BATCH_LINES:
        raise ApiError(413, f"A batch holds at most {MAX_BATCH_LINES} lines.", param="lines",
                       code="batch_too_large")
    normalized: list[bytes] = []
    bad: list[BadLine] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, 1):
        try:
            normalized.append(_normalize(services, entry, seen))
        except LineError as exc:
            bad.append(BadLine(number, exc.field, exc.reason))
    if bad:
        raise _rejected(bad, len(entries))
    return normalized


class _NotJson:
    """A JSON Lines line that does not parse."""


def _entries(raw: bytes) -> list[Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The body is not UTF-8 text.", code="invalid_json") from None
    text = text.strip()
    if text.startswith("["):
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise ApiError(400, "The body is not a valid JSON array.",
                           code="invalid_json") from None
        if not isinstance(document, list):
            raise ApiError(400, "The body must be JSON Lines or a JSON array.",
                           code="invalid_json")
        return document
    if not text:
        return []
    # "\n" only: str.splitlines would also split inside strings at U+2028 and friends.
    return [_parse_line(line) for line in text.split("\n")]


def _parse_line(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return _NotJson()


def _normalize(services: Services, entry: Any, seen: set[str]) -> bytes:
    if isinstance(entry, _NotJson):
        raise LineError("line", "The line is not valid JSON.")
    if not isinstance(entry, dict) or set(entry) != LINE_FIELDS:
        raise LineError("line", "A line must be a JSON object with exactly "
                                "'custom_id' and 'body'.")
    custom_id = entry["custom_id"]
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= MAX_CUSTOM_ID_CHARS:
        raise LineError("custom_id", f"'custom_id' must be a string of 1 to "
                                     f"{MAX_CUSTOM_ID_CHARS} characters.")
    if custom_id in seen:
        raise LineError("custom_id", "'custom_id' repeats an earlier line's.")
    seen.add(custom_id)
    gen = validate_body(services, entry["body"])
    # Fixed now, so the line runs later exactly as validated (and a random seed is kept).
    body = {**entry["body"], "model": gen.model, "seed": gen.seed}
    return json.dumps({"custom_id": custom_id, "body": body},
                      separators=(",", ":")).encode()


def _rejected(bad: list[BadLine], total: int) -> ApiError:
    listed = ", ".join(f"line {b.number} ({b.field})" for b in bad[:MAX_LISTED_LINES])
    more = f" and {len(bad) - MAX_LISTED_LINES} more" if len(bad) > MAX_LISTED_LINES else ""
    first = bad[0]
    message = (f"{len(bad)} of {total} lines are invalid, so nothing was queued: "
               f"{listed}{more}. Line {first.number}: {first.reason}")
    return ApiError(400, message, param="lines", code="invalid_lines")
