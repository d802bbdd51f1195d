"""multipart/form-data, parsed in memory as it arrives, with hard caps; never spooled to a file.

Starlette's `request.form()` moves file parts over 1 MB into a temporary file,
which would put an uploaded image on disk. Here python-multipart's push parser
(`MultipartParser`, with callbacks) is fed the body chunk by chunk and each part
is collected in memory: the number of parts, the bytes of each part's headers,
of each field and of each file are capped as they arrive, so an oversized form
is refused before the rest of it is read. Error messages name fields only;
they never quote what was sent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from web.errors import ApiError

# The parser's warnings describe the bytes it choked on: client content stays out of logs.
logging.getLogger("python_multipart").setLevel(logging.ERROR)
# RFC 2046: a boundary is 1..70 characters.
_BOUNDARY = re.compile(r"""boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))""", re.IGNORECASE)


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


class FormParser:
    """Collects the parts of one form from python-multipart's callbacks, enforcing Limits.

    feed() each chunk as it arrives, then finish(); both raise a 400 or 413 ApiError.
    """

    def __init__(self, content_type: str, limits: Limits, known: frozenset[str]) -> None:
        self.limits = limits
        self.known = known
        self.parts: list[Part] = []
        self.ended = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._data = bytearray()
        self._cap = 0
        self._name = ""
        self._filename: str | None = None
        boundary = boundary_of(content_type)
        self._delimiter = b"--" + boundary
        # RFC 2046 allows a preamble before the first delimiter; the parser does not.
        self._preamble: bytearray | None = bytearray()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })

    def feed(self, chunk: bytes) -> None:
        if self._preamble is not None:
            self._preamble += chunk
            start = self._preamble.find(self._delimiter)
            # The preamble is what precedes the delimiter; while it is not found, the last
            # bytes may be its beginning. Capped so, the limit does not depend on the chunks.
            preamble = start if start >= 0 else len(self._preamble) - len(self._delimiter) + 1
            if preamble > self.limits.max_header_bytes:
                raise malformed("the boundary never occurs")
            if start < 0:
                return
            chunk, self._preamble = bytes(self._preamble[start:]), None
        try:
            self._parser.write(chunk)
        except MultipartParseError:
            raise malformed("it does not follow RFC 7578") from None

    def finish(self) -> list[Part]:
        if self._preamble is not None:
            raise malformed("the boundary never occurs")
        try:
            self._parser.finalize()
        except MultipartParseError:
            raise malformed("it does not follow RFC 7578") from None
        if not self.ended:
            raise malformed("the closing boundary is missing")
        return self.parts

    def _part_begin(self) -> None:
        if len(self.parts) >= self.limits.max_parts:
            raise too_large(f"The form has more than {self.limits.max_parts} parts.")
        self._headers = []
        self._header_bytes = 0

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.limits.max_header_bytes:
            raise malformed(f"a part's headers are longer than {self.limits.max_header_bytes} "
                            "bytes")

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._count_header_bytes(end - start)
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((bytes(self._header_field).lower(), bytes(self._header_value)))
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        self._name, self._filename = _disposition(self._headers)
        self._cap = (self.limits.max_file_bytes if self._filename is not None
                     else self.limits.max_field_bytes)
        self._data = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if len(self._data) + (end - start) > self._cap:
            label, param = field_label(self._name, self.known)
            raise too_large(f"{label} is larger than {self._cap} bytes.", param=param)
        self._data += data[start:end]

    def _part_end(self) -> None:
        self.parts.append(Part(self._name, self._filename, bytes(self._data)))
        self._data = bytearray()

    def _end(self) -> None:
        self.ended = True


def _disposition(headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None]:
    """The field name and file name of a part's Content-Disposition header."""
    for key, value in headers:
        if key.strip() != b"content-disposition":
            continue
        kind, params = parse_options_header(value.decode("latin-1"))
        if kind != b"form-data":
            raise malformed("a part is not form-data")
        name = params.get(b"name")
        if not name:
            raise malformed("a part has no name")
        filename = params.get(b"filename")
        return (name.decode("utf-8", "replace"),
                None if filename is None else filename.decode("utf-8", "replace"))
    raise malformed("a part has no Content-Disposition header")


async def parse_form(chunks: AsyncIterator[bytes], content_type: str, limits: Limits,
                     known: frozenset[str]) -> list[Part]:
    """The parts of a form whose body arrives as chunks, in order; 400 or 413 on a bad one.

    known: the field names the route reads, the only ones an error message repeats.
    """
    form = FormParser(content_type, limits, known)
    async for chunk in chunks:
        form.feed(chunk)
    return form.finish()


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
