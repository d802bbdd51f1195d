"""multipart/form-data, parsed in memory with hard caps; never spooled to a file.

Starlette's `request.form()` moves file parts over 1 MB into a temporary file,
which would put an uploaded image on disk. Here the body is read with a byte
cap (web.body), then split in memory: a cap on the number of parts is checked
before any part is looked at, and each part has its own size cap. Error
messages name fields only; they never quote what was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from web.errors import ApiError

# RFC 2046: a boundary is 1..70 characters.
_BOUNDARY = re.compile(r"""boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))""", re.IGNORECASE)
# One parameter of a Content-Disposition header: name="value" or name=token.
_PARAM = re.compile(r""";\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))""")
_HEADER_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None  # None for a plain field
    data: bytes

    @property
    def is_file(self) -> bool:
        return self.filename is not None


@dataclass(frozen=True, slots=True)
class Limits:
    max_parts: int = 32
    max_file_bytes: int = 16 * 1024 * 1024  # each file part
    max_field_bytes: int = 64 * 1024  # each plain field (a prompt is at most 16 KB of UTF-8)
    max_header_bytes: int = 4096  # the headers of one part


def malformed(reason: str) -> ApiError:
    return ApiError(400, f"The multipart body is malformed: {reason}.", code="invalid_multipart")


def too_large(message: str, param: str | None = None) -> ApiError:
    return ApiError(413, message, param=param, code="body_too_large")


def field_label(name: str, known: frozenset[str]) -> tuple[str, str | None]:
    """How an error may name a field: only names the route knows are echoed back."""
    return (f"'{name}'", name) if name in known else ("a form field", None)


def boundary_of(content_type: str) -> bytes:
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise malformed("the Content-Type header has no boundary")
    return (match.group(1) or match.group(2)).encode("ascii", "replace")


def parse_multipart(body: bytes, content_type: str, limits: Limits,
                    known: frozenset[str]) -> list[Part]:
    """The parts of a complete multipart body, in order; 400 or 413 on a bad one.

    known: the field names the route reads, the only ones an error message repeats.
    """
    delimiter = b"--" + boundary_of(content_type)
    # Counted before anything is split or copied: a flood of tiny parts costs nothing.
    if body.count(delimiter) > limits.max_parts + 1:
        raise too_large(f"The form has more than {limits.max_parts} parts.")
    start = body.find(delimiter)
    if start < 0:
        raise malformed("the boundary never occurs")
    parts: list[Part] = []
    position = start + len(delimiter)
    while True:
        if body.startswith(b"--", position):
            return parts  # the close delimiter; anything after it is epilogue
        if not body.startswith(b"\r\n", position):
            raise malformed("a boundary is not followed by a line break")
        end = body.find(b"\r\n" + delimiter, position + 2)
        if end < 0:
            raise malformed("the closing boundary is missing")
        parts.append(_parse_part(body, position + 2, end, limits, known))
        position = end + 2 + len(delimiter)


def _parse_part(body: bytes, start: int, end: int, limits: Limits,
                known: frozenset[str]) -> Part:
    stop = min(end, start + limits.max_header_bytes + len(_HEADER_END))
    header_end = body.find(_HEADER_END, start, stop)
    if header_end < 0:
        raise malformed(f"a part's headers are missing or longer than {limits.max_header_bytes} "
                        "bytes")
    name, filename = _disposition(body[start:header_end])
    size = end - (header_end + len(_HEADER_END))
    cap = limits.max_file_bytes if filename is not None else limits.max_field_bytes
    if size > cap:
        label, param = field_label(name, known)
        raise too_large(f"{label} is larger than {cap} bytes.", param=param)
    return Part(name=name, filename=filename, data=body[header_end + len(_HEADER_END):end])


def _disposition(headers: bytes) -> tuple[str, str | None]:
    """The field name and file name of a part's Content-Disposition header."""
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        if value.split(";")[0].strip().lower() != "form-data":
            raise malformed("a part is not form-data")
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(value)}
        name = params.get("name")
        if not name:
            raise malformed("a part has no name")
        filename = params.get("filename")
        return _unquote(name), None if filename is None else _unquote(filename)
    raise malformed("a part has no Content-Disposition header")


def _unquote(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def fields_and_files(parts: list[Part],
                     known: frozenset[str]) -> tuple[dict[str, str], dict[str, bytes]]:
    """Plain fields as text and file parts as bytes, by name; each name at most once."""
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in parts:
        label, param = field_label(part.name, known)
        if part.name in fields or part.name in files:
            raise ApiError(400, f"{label} is given more than once.", param=param,
                           code="invalid_value")
        if part.is_file:
            files[part.name] = part.data
            continue
        try:
            fields[part.name] = part.data.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, f"{label} is not valid UTF-8.", param=param,
                           code="invalid_value") from None
    return fields, files
