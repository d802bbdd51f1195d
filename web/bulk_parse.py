"""Reading a batch body (JSON Lines, or a JSON array) and validating every line up front.

Each line is `{"custom_id": str, "body": {native fields + "model"}}` (the
BatchLine request model), checked exactly as the native API checks a request.
One bad line rejects the batch; the error lists bad lines by number and field,
never their content. The line count is checked before any line is parsed, and
a large body is parsed in a thread, so junk costs the event loop nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.bulk.state import BulkLine
from service.container import Services
from service.errors import InvalidInput, RequestRefused
from service.generation import GenerationInput, check_prompt
from web import strict_json
from web.errors import ApiError
from web.generation_params import find_model, parse_native
from web.request_models import BatchLine, BatchLineBody, field_names, validate

MAX_BATCH_LINES = 1000
# Bad lines named in one error message; the count covers the rest.
MAX_LISTED_LINES = 20


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


TOO_MANY_LINES = ApiError(413, f"A batch holds at most {MAX_BATCH_LINES} lines.",
                          param="lines", code="batch_too_large")


def _line_error(error: ApiError) -> LineError:
    return LineError(error.param or "line", error.message)


def validate_body(services: Services, body: BatchLineBody, owner: str) -> GenerationInput:
    """A line's request body, checked against its model as POST /v1/inference/{model} is,
    adapters included (here, not when the line runs: a bad one is the submitter's 400)."""
    try:
        spec = find_model(services.engine.specs, body.model, services.default_model)
        gen = parse_native(spec, body, owner=owner)
        check_prompt(services, gen)
        if gen.loras:
            services.engine.adapters.resolve(spec.name, gen.loras, owner)
    except (ApiError, InvalidInput, RequestRefused) as exc:
        raise LineError(f"body.{exc.param}" if exc.param else "body", exc.message) from None
    return gen


def parse_batch(raw: bytes, services: Services, owner: str) -> list[BulkLine]:
    """The validated lines (with the model and seed fixed), or a 4xx.

    CPU-bound on a large body: callers run it in a thread.
    """
    entries = _entries(raw)
    if not entries:
        raise ApiError(400, "The batch has no lines.", param="lines", code="empty_batch")
    if len(entries) > MAX_BATCH_LINES:
        raise TOO_MANY_LINES
    normalized: list[BulkLine] = []
    bad: list[BadLine] = []
    seen: set[str] = set()
    for number, entry in enumerate(entries, 1):
        try:
            normalized.append(_normalize(services, entry, seen, owner))
        except LineError as exc:
            bad.append(BadLine(number, exc.field, exc.reason))
    if bad:
        raise _rejected(bad, len(entries))
    return normalized


class _NotJson:
    """A JSON Lines line that does not parse."""

    def __init__(self, error: ApiError) -> None:
        self.error = error


def _entries(raw: bytes) -> list[Any]:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "The body is not UTF-8 text.", code="invalid_json") from None
    text = raw.strip()
    if text.startswith(b"["):
        try:
            document = strict_json.parse(text)
        except strict_json.JsonSyntaxError as exc:
            raise ApiError(400, f"The body is not a valid JSON array: {exc.reason}.",
                           code="invalid_json") from None
        if not isinstance(document, list):
            raise ApiError(400, "The body must be JSON Lines or a JSON array.",
                           code="invalid_json")
        return document
    if not text:
        return []
    # b"\n" only: splitting text would also split inside strings at U+2028 and friends.
    lines = text.split(b"\n")
    if len(lines) > MAX_BATCH_LINES:
        raise TOO_MANY_LINES
    return [_parse_line(line) for line in lines]


def _parse_line(line: bytes) -> Any:
    try:
        return strict_json.parse(line)
    except strict_json.JsonSyntaxError as exc:
        return _NotJson(strict_json.syntax_error(exc, field_names(BatchLine)))


def _normalize(services: Services, entry: Any, seen: set[str], owner: str) -> BulkLine:
    if isinstance(entry, _NotJson):
        raise _line_error(entry.error)
    try:
        line = validate(BatchLine, entry)
    except ApiError as exc:
        raise _line_error(exc) from None
    gen = validate_body(services, line.body, owner)
    if line.custom_id in seen:
        raise LineError("custom_id", "'custom_id' repeats an earlier line's.")
    seen.add(line.custom_id)
    # The validated input, its model and seed fixed: the line runs later exactly as validated.
    return BulkLine(line.custom_id, gen)


def _rejected(bad: list[BadLine], total: int) -> ApiError:
    listed = ", ".join(f"line {b.number} ({b.field})" for b in bad[:MAX_LISTED_LINES])
    more = f" and {len(bad) - MAX_LISTED_LINES} more" if len(bad) > MAX_LISTED_LINES else ""
    first = bad[0]
    message = (f"{len(bad)} of {total} lines are invalid, so nothing was queued: "
               f"{listed}{more}. Line {first.number}: {first.reason}")
    return ApiError(400, message, param="lines", code="invalid_lines")
