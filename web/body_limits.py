"""Bounds on what clients can make the server hold while it receives their bodies.

ASGI middleware around every request that carries a body:
- at most `max_receiving` requests receive a body at once, and the bytes held
  for bodies (declared lengths, reserved up front; chunked bodies as they
  arrive) stay under `max_buffered_bytes`; beyond either, 503 with
  Retry-After before a byte is read, so memory stays bounded however many
  clients stall mid-upload;
- the whole body must arrive within `timeout` seconds of the request's
  start: a body that stalls or trickles is answered 408;
- a response sent before its body was all received (408, 413, 503...) closes
  the connection, or the client could go on trickling into a discarded body.

Header deadlines are uvicorn's business: see web.server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.errors import ApiError, error_response

RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True, slots=True)
class BodyBudget:
    max_receiving: int  # requests receiving a body at once
    max_buffered_bytes: int  # bytes held for bodies, all requests together
    max_body_bytes: int  # one body (the routes refuse more with 413)
    timeout: float  # seconds from a request's start to the end of its body


def too_busy(what: str) -> ApiError:
    return ApiError(503, f"Too many {what} are being received; retry shortly.",
                    code="server_busy", error_type="server_error",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def too_slow(timeout: float) -> ApiError:
    return ApiError(408, f"The request body did not arrive within {timeout:g} seconds.",
                    code="request_timeout")


def _declared_length(scope: Scope) -> int | None:
    """Content-Length, or None for a chunked body; 0 when there is no body."""
    chunked = False
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0  # a bad one never reaches the app
        if name == b"transfer-encoding":
            chunked = True
    return None if chunked else 0


class BodyLimits:
    def __init__(self, app: ASGIApp, budget: BodyBudget) -> None:
        self.app = app
        self.budget = budget
        self.receiving = 0
        self.buffered = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == 0:
            await self.app(scope, receive, send)
            return
        budget = self.budget
        reserved = min(declared or 0, budget.max_body_bytes + 1)
        receiving = True

        async def send_closing_early(message: Message) -> None:
            if message["type"] == "http.response.start" and receiving:
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            await send(message)

        if self.receiving >= budget.max_receiving:
            await error_response(too_busy("requests"))(scope, receive, send_closing_early)
            return
        if self.buffered + reserved > budget.max_buffered_bytes:
            await error_response(too_busy("request bodies"))(scope, receive, send_closing_early)
            return
        self.receiving += 1
        self.buffered += reserved
        deadline = asyncio.get_running_loop().time() + budget.timeout

        async def limited_receive() -> Message:
            nonlocal receiving, reserved
            if not receiving:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise too_slow(budget.timeout) from None
            if message["type"] == "http.request":
                if declared is None:  # chunked: reserved as it arrives
                    size = len(message.get("body", b""))
                    if self.buffered + size > budget.max_buffered_bytes:
                        raise too_busy("request bodies")
                    self.buffered += size
                    reserved += size
                if not message.get("more_body", False):
                    receiving = False
                    self.receiving -= 1
            return message

        try:
            await self.app(scope, limited_receive, send_closing_early)
        finally:
            if receiving:
                self.receiving -= 1
            # Held until the request ends: its handler may keep the body until then.
            self.buffered -= reserved

