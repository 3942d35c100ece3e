"""The largest request bodies the system takes, where AWS sets them, and one ASGI middleware that
refuses a larger body with 413 before reading it (the local API and the model server).

- The API: every route is a Lambda proxy, and a synchronous Lambda invocation carries at most 6 MB
  (https://docs.aws.amazon.com/lambda/latest/dg/API_Invoke.html: "For synchronous invocations, the
  maximum payload size is 6 MB"); API Gateway's own 10 MB limit is never the one reached. In AWS the
  web ACL refuses a declared Content-Length above it with 413 (cdk/api.py).
- The endpoint: sagemaker-runtime's InvokeEndpoint takes a body of at most 6291456 bytes (botocore's
  service model, shape ``BodyBlob``, ``max``).
- A batch transform sends mini-batches of up to ``MaxPayloadInMB``, at most 100 MB (CreateTransformJob).

Standard library only: the Lambda bundle imports the constants.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

MIB: Final = 1024 * 1024
MAX_API_BODY_BYTES: Final = 6 * MIB
MAX_ENDPOINT_BODY_BYTES: Final = 6_291_456
MAX_TRANSFORM_BODY_BYTES: Final = 100 * MIB

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


def too_large_body(limit: int) -> bytes:
    """The 413 answer in the API's one error shape."""
    message = f"the request body is larger than {limit:,} bytes; send fewer claims per request"
    return json.dumps({"error": {"code": "payload_too_large", "message": message}}).encode()


class BodySizeLimit:
    """Answers 413 to a request whose declared ``Content-Length`` exceeds the limit, without reading
    the body; a body sent without a length (chunked) is counted as it arrives and refused as soon as
    it passes the limit, so memory never holds more than the limit."""

    def __init__(self, app: AsgiApp, max_bytes: int | Callable[[], int]) -> None:
        self.app = app
        self._limit = max_bytes

    def limit(self) -> int:
        return self._limit() if callable(self._limit) else self._limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if started:
                raise
            await self._refuse(send, limit)

    @staticmethod
    async def _refuse(send: Send, limit: int) -> None:
        body = too_large_body(limit)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the unread rest of the body must not be taken as a next request
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
