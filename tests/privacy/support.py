"""Detectors for the privacy tests: disk writes, log content, network use, file metadata.

Each detector is itself tested (tests/privacy/test_detectors.py) on a
violation it must catch, so a privacy test that passes means something.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import os
import socket
import stat
import struct
import sys
import threading
import traceback
import zlib
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from tests.helpers import CANARY

# -- disk writes ------------------------------------------------------------------------------

_WRITE_FLAGS = (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
                | getattr(os, "O_TMPFILE", 0))
# Audit events that create or change something on disk other than through open().
_DISK_EVENTS = frozenset({"tempfile.mkstemp", "tempfile.mkdtemp", "os.mkdir", "os.rename",
                          "os.link", "os.symlink", "os.truncate", "shutil.copyfile"})


_PROC_FDS = "/proc/self/fd"
_ACCESS_MODE = 0o3  # the O_ACCMODE bits of the flags in /proc/self/fdinfo


# (device, inode, size, mtime_ns, position) of a file open for writing.
FileState = tuple[int, int, int, int, int]


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"{_PROC_FDS}/{fd}")
    except OSError:
        return f"descriptor {fd}"


def _file_state(fd: int) -> FileState | None:
    """(device, inode, size, mtime_ns, position) of a regular file open for writing, else None."""
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            fields = dict(line.split(":", 1) for line in info if ":" in line)
        if int(fields["flags"].strip(), 8) & _ACCESS_MODE == os.O_RDONLY:
            return None
        status = os.fstat(fd)
    except (OSError, KeyError, ValueError):
        return None  # closed meanwhile, or not ours to read
    if not stat.S_ISREG(status.st_mode):
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            int(fields["pos"].strip()))


def _files_open_for_writing() -> dict[int, FileState]:
    """Every regular file this process holds open for writing, by descriptor.

    stdout and stderr are left out: they are the log channel, which the log tests
    read for content (under pytest they are temporary files).
    """
    console = set()
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            console.add((os.fstat(fd).st_dev, os.fstat(fd).st_ino))
    states = {}
    for name in os.listdir(_PROC_FDS):
        state = _file_state(int(name))
        if state is not None and state[:2] not in console:
            states[int(name)] = state
    return states


class WriteRecorder:
    """Records every write to disk, from any thread, while switched on.

    An audit hook sees each open for writing (and the other events that change a
    directory); audit hooks cannot be removed, so there is one for the whole test
    session. Python raises no audit event for a write itself, so a file opened
    before recording began, and written through during it, is caught another
    way: its size, modification time or position differ at the end.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._on = False
        self.writes: list[str] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self._on:
            return
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                    flags & _WRITE_FLAGS):
                self._record(f"open {path!r} mode={mode!r} flags={flags:#o}")
        elif event in _DISK_EVENTS:
            self._record(f"{event} {args!r}")

    def _record(self, what: str) -> None:
        with self._lock:
            self.writes.append(what)

    def _record_changed(self, before: dict[int, tuple[FileState, str]]) -> None:
        for fd, (state, path) in before.items():
            now = _file_state(fd)
            if now is None or now[:2] != state[:2]:  # closed since: look the file up by path
                with contextlib.suppress(OSError):
                    status = os.stat(path)
                    if (status.st_dev, status.st_ino) == state[:2]:
                        now = (*state[:2], status.st_size, status.st_mtime_ns, state[4])
            if now is not None and now[:2] == state[:2] and now[2:] != state[2:]:
                self._record(f"write to {path!r} through a descriptor opened before recording")

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[str]]:
        """Record while the block runs; yields the list the writes land in."""
        # Python's own bytecode cache is not the service writing; keep it out of the record.
        saved = sys.dont_write_bytecode
        sys.dont_write_bytecode = True
        self.writes = []
        before = {fd: (state, _path_of(fd)) for fd, state in _files_open_for_writing().items()}
        self._on = True
        try:
            yield self.writes
        finally:
            self._on = False
            sys.dont_write_bytecode = saved
            self._record_changed(before)


WRITES = WriteRecorder()
sys.addaudithook(WRITES)

# -- log content ------------------------------------------------------------------------------

# Libraries that may log on the request path; some (diffusers) do not propagate to root.
WATCHED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "starlette", "diffusers",
                   "PIL", "asyncio", "imagegen", "web", "store", "apscheduler")
# The test's own HTTP client logs each URL it calls; that is the client side, not the service.
CLIENT_LOGGERS = ("httpx", "httpcore")


def record_text(record: logging.LogRecord) -> str:
    """Everything a handler could write of a record: message, args, extras, traceback."""
    texts = [repr(vars(record))]
    with contextlib.suppress(Exception):
        texts.append(record.getMessage())
    if record.exc_info and record.exc_info[1] is not None:
        texts.append("".join(traceback.format_exception(record.exc_info[1])))
    return "\n".join(texts)


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        # Attached at several levels of one hierarchy, it sees a propagated record more than once.
        if id(record) in self._seen or record.name.split(".")[0] in CLIENT_LOGGERS:
            return
        self._seen.add(id(record))
        self.records.append(record)
        self.texts.append(record_text(record))


@contextlib.contextmanager
def captured_logs() -> Iterator[LogCapture]:
    """Every record the service emits with the root logger at DEBUG (IMAGEGEN_LOG_LEVEL=DEBUG).

    Levels the service itself pins on library loggers are kept: they are part of
    what is being tested. The handler also sits on each watched logger, since
    some of them do not propagate to the root.
    """
    capture = LogCapture()
    root = logging.getLogger()
    saved_level = root.level
    root.setLevel(logging.DEBUG)
    loggers = [root, *(logging.getLogger(name) for name in WATCHED_LOGGERS)]
    for logger in loggers:
        logger.addHandler(capture)
    try:
        yield capture
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
        root.setLevel(saved_level)


# -- network ----------------------------------------------------------------------------------


def _is_loopback(host: Any) -> bool:
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name other than localhost would need DNS


class NetworkGuard:
    """Refuses, and records, every attempt to reach a non-loopback address."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, what: str, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if isinstance(address, str | bytes):  # an AF_UNIX path: local by definition
            return
        if not _is_loopback(host):
            self.attempts.append(f"{what} {address!r}")
            raise OSError(f"outbound network use refused by the test: {what}")

    def install(self, monkeypatch: Any) -> None:
        guard = self
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        real_sendto = socket.socket.sendto
        real_create_connection, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

        def connect(sock: socket.socket, address: Any) -> None:
            guard.check("connect", address)
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard.check("connect_ex", address)
            return real_connect_ex(sock, address)

        def sendto(sock: socket.socket, data: bytes, *rest: Any) -> int:
            guard.check("sendto", rest[-1])
            return real_sendto(sock, data, *rest)  # type: ignore[no-any-return]

        def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            guard.check("create_connection", address)
            return real_create_connection(address, *args, **kwargs)

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            guard.check("getaddrinfo", (host, port))
            return real_getaddrinfo(host, port, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket.socket, "sendto", sendto)
        monkeypatch.setattr(socket, "create_connection", create_connection)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# -- file metadata ----------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks a bare image needs; anything else (tEXt, zTXt, iTXt, eXIf, iCCP, tIME...) is metadata.
PNG_PIXEL_CHUNKS = frozenset({"IHDR", "PLTE", "tRNS", "IDAT", "IEND"})
WEBP_METADATA_CHUNKS = frozenset({"EXIF", "XMP ", "ICCP"})
JPEG_APP1, JPEG_APP2, JPEG_COM = 0xE1, 0xE2, 0xFE


def png_chunks(data: bytes) -> list[str]:
    assert data.startswith(PNG_SIGNATURE), "not a PNG"
    chunks, position = [], len(PNG_SIGNATURE)
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunks.append(kind.decode("latin-1"))
        position += 12 + length
    return chunks


def webp_chunks(data: bytes) -> list[str]:
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", "not a WebP"
    chunks, position = [], 12
    while position + 8 <= len(data):
        kind, size = struct.unpack("<4sI", data[position:position + 8])
        chunks.append(kind.decode("latin-1"))
        position += 8 + size + (size & 1)
    return chunks


def jpeg_markers(data: bytes) -> list[int]:
    """The markers of the segments before the image data."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    markers, position = [], 2
    while position + 4 <= len(data):
        marker = data[position + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        position += 2 + length
    return markers


def metadata_in(data: bytes) -> list[str]:
    """What of an encoded image is metadata rather than pixels (empty when bare)."""
    if data.startswith(PNG_SIGNATURE):
        return [c for c in png_chunks(data) if c not in PNG_PIXEL_CHUNKS]
    if data[:4] == b"RIFF":
        return [c for c in webp_chunks(data) if c in WEBP_METADATA_CHUNKS]
    return [f"APP{m - 0xE0}" if m < JPEG_COM else "COM" for m in jpeg_markers(data)
            if m in (JPEG_APP1, JPEG_APP2, JPEG_COM)]


# -- images -----------------------------------------------------------------------------------

# An XMP packet and EXIF block that carry the canary, as a phone or an editor would write them.
XMP = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description dc:title="{CANARY}"/>'
       "</rdf:RDF></x:xmpmeta>").encode()


def canary_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = f"ImageDescription {CANARY}"  # ImageDescription
    exif[0x013B] = CANARY  # Artist
    return exif.tobytes()


def encode(image: Image.Image, fmt: str, *, with_canary: bool = False) -> bytes:
    """Encode an image; with_canary hides the canary in every metadata slot the format has."""
    buffer = io.BytesIO()
    options: dict[str, Any] = {}
    if with_canary:
        options["exif"] = canary_exif()
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_text("Description", CANARY)
            info.add_text("Comment", CANARY, zip=True)
            info.add_itxt("Title", CANARY, lang="en", tkey=CANARY)
            info.add_itxt("XML:com.adobe.xmp", XMP.decode())
            options["pnginfo"] = info
        else:
            options["xmp"] = XMP
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid(colour: tuple[int, ...], size: tuple[int, int] = (32, 32), mode: str = "RGB"
          ) -> Image.Image:
    return Image.new(mode, size, colour)


@cache
def big_png(target_bytes: int = 5 * 1024 * 1024) -> bytes:
    """A PNG of noise (which does not compress) of at least target_bytes, carrying the canary."""
    side = int((target_bytes / 3) ** 0.5) + 8
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    data = encode(Image.fromarray(pixels), "PNG", with_canary=True)
    assert len(data) >= target_bytes
    return data


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A greyscale PNG of width x height black pixels: tiny on the wire, huge decoded.

    rows: how many rows the data really holds (all by default; fewer is a lie in the header).
    """
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + one byte per pixel
    idat = b"".join(compressor.compress(row) for _ in range(height if rows is None else rows))
    idat += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
