"""A log handler that writes request lines in batches, like nginx's `access_log ... buffer=`.

One write (a system call) per request line was the largest single cost of
serving an image (bench/serving.py). Routine records of the buffered loggers
wait in memory for at most `flush_seconds` or `max_lines`; any other record
(a warning, a start-up or shutdown message) writes what is waiting and itself
at once, so the order of lines is kept and nothing waits behind an error.
"""

from __future__ import annotations

import logging
import threading
from typing import TextIO


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    def __init__(
        self,
        stream: TextIO,
        buffered_loggers: frozenset[str],
        flush_seconds: float = 0.5,
        max_lines: int = 64,
    ) -> None:
        super().__init__(stream)
        self.buffered_loggers = buffered_loggers
        self.max_lines = max_lines
        self._pending: list[str] = []
        self._stopped = threading.Event()
        # A daemon thread: a quiet server still writes its last lines within flush_seconds.
        self._flusher = threading.Thread(
            target=self._flush_every, args=(flush_seconds,), name="log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        # emit() runs under the handler's lock (Handler.handle), as does flush().
        self._pending.append(line)
        routine = record.levelno < logging.WARNING and record.name in self.buffered_loggers
        if not routine or len(self._pending) >= self.max_lines:
            try:
                self._write_pending()
            except Exception:
                self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created in Handler.__init__
            self._write_pending()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _write_pending(self) -> None:
        if self._pending:
            self.stream.write("".join(self._pending))
            self._pending.clear()
        if hasattr(self.stream, "flush"):
            self.stream.flush()

    def _flush_every(self, seconds: float) -> None:
        while not self._stopped.wait(seconds):
            if self._pending:
                self.flush()
