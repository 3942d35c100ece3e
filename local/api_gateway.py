"""A local stand-in for API Gateway's REST (v1) Lambda proxy integration.

HTTP requests become proxy events shaped like ``sam local generate-event apigateway aws-proxy``; the
Lambda handler's proxy result becomes the HTTP response. The handler is the one deployed to Lambda.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

log = logging.getLogger("claims_risk.local_api")
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class LocalLambdaContext:
    """The attributes Powertools reads from a Lambda context object."""

    def __init__(self, function_name: str = "claims-risk-api-local", timeout_s: float = 29.0) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def proxy_event(
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    query_pairs: Sequence[tuple[str, str]],
    body_bytes: bytes | None,
    source_ip: str,
    stage: str = "local",
) -> dict[str, Any]:
    """An API Gateway REST proxy event for one HTTP request."""
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in headers:
        single_headers[name] = value  # API Gateway keeps the last value here
        multi_headers.setdefault(name, []).append(value)
    single_query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in query_pairs:
        single_query[name] = value
        multi_query.setdefault(name, []).append(value)
    body: str | None = None
    is_base64 = False
    if body_bytes:
        try:
            body = body_bytes.decode("utf-8")
        except UnicodeDecodeError:  # binary bodies travel base64-encoded, as API Gateway sends them
            body, is_base64 = base64.b64encode(body_bytes).decode("ascii"), True
    now = time.time()
    user_agent = next((v for k, v in headers if k.lower() == "user-agent"), "")
    host = next((v for k, v in headers if k.lower() == "host"), "127.0.0.1")
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": single_query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": path.lstrip("/")} if path != "/" else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": "000000000000",
            "resourceId": "local",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "sourceIp": source_ip,
                "userAgent": user_agent,
                "caller": None,
                "user": None,
                "userArn": None,
                "accessKey": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
            },
            "path": f"/{stage}{path}",
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "domainName": host,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def http_response_from_proxy(result: dict[str, Any]) -> Response:
    """The HTTP response for a Lambda proxy result (headers and multiValueHeaders merged)."""
    raw = result.get("body") or ""
    content = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode("utf-8")
    response = Response(content=content, status_code=int(result.get("statusCode", 200)))
    del response.headers["content-length"]
    multi = {k.lower(): list(v) for k, v in (result.get("multiValueHeaders") or {}).items()}
    for name, value in (result.get("headers") or {}).items():
        multi.setdefault(name.lower(), [str(value)])
    for name, values in multi.items():
        for value in values:
            response.headers.append(name, str(value))
    response.headers["content-length"] = str(len(content))
    return response


def create_local_api(
    handler: LambdaHandler, *, stage: str = "local", extra_routes: Sequence[BaseRoute] | None = None
) -> Starlette:
    """A Starlette app sending every request (but ``extra_routes``) through the Lambda handler."""

    async def proxy(request: Request) -> Response:
        event = proxy_event(
            request.method,
            request.url.path,
            request.headers.items(),
            request.query_params.multi_items(),
            await request.body(),
            request.client.host if request.client else "127.0.0.1",
            stage,
        )
        try:
            result = await run_in_threadpool(handler, event, LocalLambdaContext())
        except Exception:
            log.exception("the Lambda handler raised")  # API Gateway answers 502 when the function fails
            return JSONResponse(
                {"error": {"code": "handler_crashed", "message": "internal server error"}}, status_code=502
            )
        return http_response_from_proxy(result)

    routes = [*(extra_routes or []), Route("/{path:path}", proxy, methods=HTTP_METHODS)]
    return Starlette(routes=routes)
