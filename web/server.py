"""uvicorn, configured so that a slow or idle client cannot hold a connection.

uvicorn closes a connection idle between requests (`timeout_keep_alive`) but
has no deadline for a request's headers: a client that trickles them, or
connects and says nothing, would hold its connection (and a file descriptor)
forever. HeaderDeadlineProtocol adds one: the headers must be complete within
the client timeout of the connection opening or the previous response; else
408 and the connection is closed. Body deadlines are web.body_limits'.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

# Between requests on a keep-alive connection (uvicorn's default is 5 s).
KEEP_ALIVE_SECONDS = 5


def _timeout_response(timeout: float) -> bytes:
    body = json.dumps({"error": {
        "message": f"The request headers did not arrive within {timeout:g} seconds.",
        "type": "invalid_request_error", "param": None, "code": "request_timeout"}}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))


class HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout: float = 60.0  # set per server by protocol_with_header_deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()  # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout,
                                                         self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        # A response in progress answers its own request; an idle connection just closes.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_timeout_response(self.header_timeout))
        self.transport.close()


def protocol_with_header_deadline(timeout: float) -> type[HeaderDeadlineProtocol]:
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": timeout})


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, access_log=False, log_config=None,
        server_header=False, http=protocol_with_header_deadline(settings.client_timeout),
        timeout_keep_alive=KEEP_ALIVE_SECONDS, **options)
