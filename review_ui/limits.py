"""A bound on request bodies, kept before anything reads them (a pure ASGI middleware).

FastAPI parses a form or JSON body before a route's dependencies run, so before it is known
who is asking: without a bound, one anonymous request of 100 MiB costs the server hundreds
of MB. A declared Content-Length over the limit is refused with 413 before a byte of the
body is read; a body sent in chunks is counted as it arrives and refused once over.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """A request body over its path's limit (raised while the route reads it)."""

    def __init__(self, limit: int) -> None:
        # Connection: close, so that the server drops the rest instead of reading it.
        super().__init__(413, too_large_text(limit), headers={"Connection": "close"})


def too_large_text(limit: int) -> str:
    """What a refused body is told."""
    return f"request body is larger than {limit} bytes"


class BodyLimit:
    """Refuse request bodies over `max_bytes` (or over the limit of the longest path
    prefix in `by_prefix`, for routes such as uploads that take more)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, by_prefix: Mapping[str, int] | None = None
    ) -> None:
        self.app, self.max_bytes = app, max_bytes
        # Longest prefix first: /api/uploads/big wins over /api/uploads.
        self.by_prefix = sorted((by_prefix or {}).items(), key=lambda kv: -len(kv[0]))

    def limit_for(self, path: str) -> int:
        """The body limit of a request path."""
        for prefix, limit in self.by_prefix:
            if path.startswith(prefix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body counted, or refuse it at once."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await refuse(send, 400, "Content-Length must be a whole number of bytes")
            return
        if declared is not None and int(declared) > limit:
            await refuse(send, 413, too_large_text(limit))
            return
        received, started = 0, False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            # The route's error handling normally answers it; if it escaped, answer here.
            if started:
                raise
            await refuse(send, 413, too_large_text(limit))


async def refuse(send: Send, status: int, text: str) -> None:
    """Answer with `status` and close the connection, the body unread."""
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
