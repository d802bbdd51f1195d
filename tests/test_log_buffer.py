"""Request lines are written in batches; everything else at once, in order."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import pytest

from web.log_buffer import BatchingStreamHandler


@pytest.fixture
def logged() -> Iterator[tuple[io.StringIO, BatchingStreamHandler]]:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream, frozenset({"buffered"}), flush_seconds=0.2,
                                    max_lines=3)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    loggers = [logging.getLogger(name) for name in ("buffered", "other")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    yield stream, handler
    for logger in loggers:
        logger.removeHandler(handler)
        logger.propagate = True
    handler.close()


@pytest.mark.parametrize(("logger", "level", "message"), [
    ("other", logging.INFO, "started"),  # another logger's routine record
    ("buffered", logging.WARNING, "failed"),  # a warning of a buffered logger
])
def test_routine_lines_wait_and_anything_else_writes_them_first(
        logged: tuple[io.StringIO, BatchingStreamHandler], logger: str, level: int,
        message: str) -> None:
    stream, _ = logged
    logging.getLogger("buffered").info("one")
    logging.getLogger("buffered").info("two")
    assert stream.getvalue() == ""
    logging.getLogger(logger).log(level, message)
    assert stream.getvalue() == f"buffered one\nbuffered two\n{logger} {message}\n"


def test_a_full_buffer_is_written(logged: tuple[io.StringIO, BatchingStreamHandler]) -> None:
    stream, _ = logged
    for word in ("one", "two", "three"):
        logging.getLogger("buffered").info(word)
    assert stream.getvalue().splitlines() == ["buffered one", "buffered two", "buffered three"]


def test_a_quiet_server_still_writes_within_the_flush_interval(
        logged: tuple[io.StringIO, BatchingStreamHandler]) -> None:
    stream, _ = logged
    logging.getLogger("buffered").info("last")
    deadline = time.monotonic() + 10
    while stream.getvalue() == "" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stream.getvalue() == "buffered last\n"


def test_flush_writes_what_waits(logged: tuple[io.StringIO, BatchingStreamHandler]) -> None:
    stream, handler = logged
    logging.getLogger("buffered").info("last")
    handler.flush()
    assert stream.getvalue() == "buffered last\n"
