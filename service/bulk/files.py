"""The encrypted files of one batch: its input lines and its output lines.

A batch has one AES-GCM key, held only in this process's memory. Each line is
sealed on its own (nonce || ciphertext+tag) with the batch id, the file kind
and the line number bound as associated data, so an edited line, or a line
moved to another position, file or batch, fails authentication and fails
alone. Where each record lies is kept in memory too: nothing read from disk
decides what is decrypted. Dropping a batch overwrites the key first, then
unlinks the files, so a file that outlives its batch is already unreadable.
All methods block (file I/O): callers run them in a thread. One lock orders
them, so nothing is written or read with a key that is being dropped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import threading
from pathlib import Path

from service.settings import Settings, SettingsError
from store import sealing

_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
# No O_CREAT: an append after the file was removed fails instead of recreating it.
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
# Only names this module writes are ever removed, so a misconfigured directory loses nothing.
_OWN_FILE = re.compile(r"[0-9a-f]{64}\.(in|out)")

Span = tuple[int, int]  # (offset, length) of one sealed record in its file


def default_batch_dir(settings: Settings) -> Path:
    """Private to this user and port, so two servers on one machine never share it."""
    return Path(tempfile.gettempdir()) / f"imagegen-batches-{os.getuid()}-{settings.port}"


def prepare_batch_dir(directory: Path) -> None:
    """Create the directory owner-only and remove every batch file a previous process left.

    Blocking: start-up only.
    """
    try:
        sealing.prepare_directory(directory, _OWN_FILE)
    except sealing.UnsafeDirectory:
        raise SettingsError("IMAGEGEN_BATCH_DIR must be a directory owned by this user") from None


def remove_batch_dir(directory: Path) -> None:
    """At shutdown, once every batch is dropped: the empty directory goes too.

    Each port has its own default directory, so left behind they would pile
    up in the temporary directory. One that still holds files is kept.
    Blocking: shutdown only.
    """
    with contextlib.suppress(OSError):  # not empty, or already gone
        directory.rmdir()


def file_stem(batch_id: str) -> str:
    # A listing of the directory never shows a batch id (the capability to read it).
    return hashlib.sha256(batch_id.encode()).hexdigest()


class BatchFiles:
    def __init__(self, directory: Path, batch_id: str) -> None:
        stem = file_stem(batch_id)
        self.input_path = directory / f"{stem}.in"
        self.output_path = directory / f"{stem}.out"
        self.input_spans: list[Span] = []
        self.output_spans: list[tuple[int, Span]] = []  # (line, span), in the order written
        self._batch_id = batch_id.encode()
        self._key = sealing.new_key()
        self._lock = threading.Lock()
        self._dropped = False

    def write_inputs(self, lines: list[bytes]) -> None:
        """Seal every input line into a new input file; create the empty output file."""
        records = [self._seal(b"in", number, line) for number, line in enumerate(lines, 1)]
        with self._lock:
            if self._dropped:
                raise FileNotFoundError("the batch was dropped")
            spans = _write_new(self.input_path, records)
            _write_new(self.output_path, [])
            self.input_spans = spans

    def read_input(self, line: int) -> bytes | None:
        """Line `line` (1-based), or None when it is gone or fails authentication.

        After drop() the key is zeros, so even a restored file fails here.
        """
        with self._lock:
            return self._open_record(self.input_path, self.input_spans[line - 1], b"in", line)

    def remove_inputs(self) -> None:
        """The batch has run: its input is no longer needed by anyone."""
        with self._lock:
            sealing.remove_files([self.input_path])

    def append_output(self, line: int, data: bytes) -> None:
        with self._lock:
            if self._dropped:
                raise FileNotFoundError("the batch was dropped")
            record = self._seal(b"out", line, data)
            fd = os.open(self.output_path, _APPEND_FLAGS)
            with os.fdopen(fd, "ab") as file:
                offset = file.seek(0, os.SEEK_END)
                file.write(record)
            self.output_spans.append((line, (offset, len(record))))

    def read_outputs(self) -> list[tuple[int, bytes | None]]:
        """Every output line written so far: (line, plaintext or None when unreadable)."""
        with self._lock:
            return [(line, self._open_record(self.output_path, span, b"out", line))
                    for line, span in self.output_spans]

    def drop(self) -> None:
        """Key first, then the files."""
        with self._lock:
            self._dropped = True
            sealing.forget(self._key)
            sealing.remove_files([self.input_path, self.output_path])

    def _aad(self, kind: bytes, line: int) -> bytes:
        return b"\0".join((b"imagegen-batch", self._batch_id, kind, str(line).encode()))

    def _seal(self, kind: bytes, line: int, data: bytes) -> bytes:
        return sealing.seal(self._key, self._aad(kind, line), data)

    def _open_record(self, path: Path, span: Span, kind: bytes, line: int) -> bytes | None:
        offset, length = span
        try:
            with path.open("rb") as file:
                file.seek(offset)
                sealed = file.read(length)
        except FileNotFoundError:
            return None
        return sealing.unseal(self._key, self._aad(kind, line), sealed)


def _write_new(path: Path, records: list[bytes]) -> list[Span]:
    """Write records to a new owner-only file; return where each one lies."""
    spans: list[Span] = []
    offset = 0
    fd = os.open(path, _CREATE_FLAGS, sealing.FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            for record in records:
                file.write(record)
                spans.append((offset, len(record)))
                offset += len(record)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return spans
