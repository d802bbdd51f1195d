"""Each detector of the privacy tests catches the violation it exists for.

Without these, a privacy test could pass because its detector is blind.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest
from PIL import Image

from imagegen.encode import encode_image
from tests.helpers import CANARY
from tests.privacy.support import (
    WRITES,
    NetworkGuard,
    big_png,
    captured_logs,
    encode,
    metadata_in,
    png_bomb,
    solid,
)


def test_the_recorder_sees_a_spooled_upload_roll_over_to_a_nameless_temp_file() -> None:
    # What Starlette's request.form() does with a file part over 1 MB.
    with WRITES.recording() as writes, tempfile.SpooledTemporaryFile(max_size=2**20) as spooled:
        spooled.write(b"\0" * 2**21)
    assert any("flags=" in write for write in writes)


def test_the_recorder_sees_writes_from_any_thread_and_ignores_reads(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_bytes(b"x")
    with WRITES.recording() as writes:
        existing.read_bytes()
        thread = threading.Thread(target=(tmp_path / "from-a-thread").write_bytes, args=(b"x",))
        thread.start()
        thread.join()
        fd = os.open(tmp_path / "raw", os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        os.close(tempfile.mkstemp(dir=tmp_path)[0])
        tempfile.mkdtemp(dir=tmp_path)
    seen = {kind for kind in ("from-a-thread", "raw", "tempfile.mkstemp", "tempfile.mkdtemp")
            if any(kind in write for write in writes)}
    assert len(seen) == 4
    assert not any("existing" in write for write in writes)


def test_the_recorder_sees_writes_through_files_opened_before_it_began(tmp_path: Path) -> None:
    """A log file, a scratch file or a descriptor opened at start-up, written during a request."""
    appended = (tmp_path / "appended").open("ab", buffering=0)
    overwritten = os.open(tmp_path / "overwritten", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(overwritten, b"before")
    os.utime(overwritten, ns=(0, 0))  # so a write now changes the time whatever its resolution
    closed = (tmp_path / "closed").open("wb")
    untouched = (tmp_path / "untouched").open("wb")
    read_only = (tmp_path / "appended").open("rb")
    try:
        with WRITES.recording() as writes:
            thread = threading.Thread(target=appended.write, args=(CANARY.encode(),))
            thread.start()
            thread.join()
            os.pwrite(overwritten, b"AFTER!", 0)  # same size, position unmoved
            closed.write(b"x")
            closed.close()
            read_only.read()
    finally:
        for file in (appended, untouched, read_only):
            file.close()
        os.close(overwritten)
    written = {name for name in ("appended", "overwritten", "closed", "untouched")
               if any(f"{name}'" in write for write in writes)}
    assert written == {"appended", "overwritten", "closed"}


def test_the_log_capture_sees_args_extras_tracebacks_and_non_propagating_loggers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # diffusers may configure its library logger not to propagate to the root.
    monkeypatch.setattr(logging.getLogger("diffusers"), "propagate", False)
    with captured_logs() as logs:
        logging.getLogger("imagegen.somewhere").debug("drawing %s", CANARY)
        logging.getLogger("web.somewhere").info("done", extra={"detail": CANARY})
        try:
            raise ValueError(CANARY)
        except ValueError:
            logging.getLogger("store.somewhere").exception("failed")
        logging.getLogger("diffusers.somewhere").error(CANARY)  # diffusers runs at ERROR
    assert sum(CANARY in text for text in logs.texts) == 4


def test_the_network_guard_refuses_and_records_non_loopback(
        monkeypatch: pytest.MonkeyPatch) -> None:
    guard = NetworkGuard()
    guard.install(monkeypatch)
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 443), timeout=1)  # TEST-NET-1: never routed
    with pytest.raises(OSError):
        socket.getaddrinfo("huggingface.co", 443)
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("192.0.2.1", 80))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError):
        udp.sendto(b"x", ("192.0.2.1", 53))
    assert len(guard.attempts) == 4
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(
            server.getsockname(), timeout=1):
        pass  # loopback is allowed
    assert len(guard.attempts) == 4


@pytest.mark.parametrize(("fmt", "expected"), [
    ("PNG", {"tEXt", "zTXt", "iTXt", "eXIf"}),
    ("WEBP", {"EXIF", "XMP "}),
    ("JPEG", {"APP1"}),
])
def test_the_metadata_walkers_find_what_an_image_carries(fmt: str, expected: set[str]) -> None:
    tagged = encode(solid((200, 10, 10)), fmt, with_canary=True)
    assert set(metadata_in(tagged)) >= expected
    assert CANARY.encode() in tagged
    assert metadata_in(encode(solid((200, 10, 10)), fmt)) == []


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_the_encoder_drops_what_an_image_carries(fmt: str) -> None:
    pillow_format = fmt.upper()
    carrying = Image.open(io.BytesIO(encode(solid((200, 10, 10)), pillow_format,
                                            with_canary=True)))
    data = encode_image(carrying, fmt)
    assert metadata_in(data) == []
    assert CANARY.encode() not in data


def test_the_test_images_are_what_they_claim() -> None:
    big = big_png()
    assert len(big) >= 5 * 1024 * 1024 and CANARY.encode() in big
    bomb = png_bomb(5000, 5000)
    assert len(bomb) < 100_000
    assert Image.open(io.BytesIO(bomb)).size == (5000, 5000)
