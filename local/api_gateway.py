"""A local stand-in for API Gateway's REST (v1) Lambda proxy integration.

HTTP requests become proxy events shaped like ``sam local generate-event apigateway aws-proxy``; the
Lambda handler's proxy result becomes the HTTP response. The handler is the very one deployed to
Lambda, so what works here works behind API Gateway, and the other way round.

The API answers both at the root (like a custom domain, or ``sam local start-api``) and under
``/<stage>/`` (like the ``execute-api`` URL). ``requestContext.path`` tells the handler which one the
client used, as API Gateway does; Powertools builds Swagger's server URL from it, so "Try it out"
targets a URL that this server answers.
"""

from __future__ import annotations

import base64
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from local.auth import LocalAuthorizer
from shared import auth
from shared.request_limits import MAX_API_BODY_BYTES, BodySizeLimit

log = logging.getLogger("claims_risk.local_api")

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]

# The methods an ANY method of API Gateway accepts.
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
LOCAL_ACCOUNT_ID = "000000000000"
# API Gateway's limit for an integration; the handler sees it through get_remaining_time_in_millis().
INTEGRATION_TIMEOUT_S = 29.0


class MalformedProxyResponse(ValueError):
    """The handler returned something API Gateway would reject ("Malformed Lambda proxy response")."""


class LocalLambdaContext:
    """The attributes of a Lambda context object that Powertools Logger, Tracer and Metrics read."""

    def __init__(
        self,
        function_name: str = "claims-risk-api-local",
        *,
        memory_limit_in_mb: int = 512,
        timeout_s: float = INTEGRATION_TIMEOUT_S,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:{LOCAL_ACCOUNT_ID}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())  # one per invocation, as in Lambda
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]local", time.gmtime())
        self.identity: Any = None  # set only for calls from the mobile SDKs
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def proxy_event(
    method: str,
    path: str,
    headers: Iterable[tuple[str, str]],
    query_pairs: Iterable[tuple[str, str]],
    body_bytes: bytes | None,
    source_ip: str,
    stage: str = "local",
    *,
    stage_in_path: bool = True,
) -> dict[str, Any]:
    """The API Gateway REST proxy event for one HTTP request.

    ``path`` is the resource path, without the stage. ``stage_in_path`` says whether the client's URL
    began with ``/<stage>`` (the execute-api URL) or not (a custom domain); it only changes
    ``requestContext.path``, as in API Gateway.
    """
    header_list = list(headers)
    single_headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in header_list:
        single_headers[name] = value  # API Gateway keeps the last value of a repeated header here
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
        except UnicodeDecodeError:  # bytes that are not text travel base64-encoded, as API Gateway sends them
            body, is_base64 = base64.b64encode(body_bytes).decode("ascii"), True

    def first_header(wanted: str, default: str) -> str:
        return next((value for name, value in header_list if name.lower() == wanted), default)

    # The root has its own resource in a proxy API (LambdaRestApi adds ANY / beside ANY /{proxy+}).
    resource = "/" if path == "/" else "/{proxy+}"
    host = first_header("host", "127.0.0.1")
    now = time.time()
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": single_headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": single_query or None,  # None, not {}, when there are none
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None if path == "/" else {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT_ID,
            "resourceId": "local",
            "stage": stage,
            "requestId": str(uuid.uuid4()),
            "extendedRequestId": uuid.uuid4().hex[:16],
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "accessKey": None,
                "sourceIp": source_ip,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": first_header("user-agent", ""),
                "user": None,
            },
            "path": f"/{stage}{path}" if stage_in_path else path,
            "resourcePath": resource,
            "httpMethod": method,
            "apiId": "local",
            "protocol": "HTTP/1.1",
            "domainName": host,
        },
        "body": body,
        "isBase64Encoded": is_base64,
    }


def http_response_from_proxy(result: dict[str, Any]) -> Response:
    """The HTTP response for a Lambda proxy result.

    ``headers`` and ``multiValueHeaders`` are merged as API Gateway merges them: every value of both,
    a pair given in both only once. Raises :class:`MalformedProxyResponse` for a result API Gateway
    would reject with a 502.
    """
    if not isinstance(result, dict):
        raise MalformedProxyResponse(f"the result is a {type(result).__name__}, not an object")
    status = result.get("statusCode")
    # API Gateway takes the status as a number or a numeric string ("404").
    if isinstance(status, bool) or not isinstance(status, int | str) or not str(status).isdigit():
        raise MalformedProxyResponse(f"statusCode must be an integer, got {status!r}")
    if not 100 <= int(status) <= 599:
        raise MalformedProxyResponse(f"statusCode {status} is not an HTTP status")
    raw_body = result.get("body")
    if raw_body is not None and not isinstance(raw_body, str):
        raise MalformedProxyResponse(f"body must be a string, got a {type(raw_body).__name__}")
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise MalformedProxyResponse("headers and multiValueHeaders must be objects")
    if any(not isinstance(values, list) for values in multi.values()):
        raise MalformedProxyResponse("each multiValueHeaders value must be a list of strings")

    merged: dict[str, list[str]] = {}
    for name, values in multi.items():
        merged.setdefault(name.lower(), []).extend(str(value) for value in values)
    for name, value in single.items():
        values = merged.setdefault(name.lower(), [])
        if str(value) not in values:
            values.append(str(value))
    merged.pop("content-length", None)  # recomputed below from the body actually sent
    # Without a Content-Type from the function, API Gateway answers application/json.
    merged.setdefault("content-type", ["application/json"])

    try:
        content = base64.b64decode(raw_body or "", validate=True) if result.get("isBase64Encoded") else None
    except ValueError as error:
        raise MalformedProxyResponse("isBase64Encoded is true but the body is not base64") from error
    if content is None:
        content = (raw_body or "").encode("utf-8")
    response = Response(content=content, status_code=int(status))
    for name, values in merged.items():
        for value in values:  # repeated headers (Set-Cookie) stay repeated
            response.headers.append(name, value)
    return response


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _title_case(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _refusal(
    status: int, code: str, message: str, correlation_id: str, headers: dict[str, str]
) -> JSONResponse:
    body = {"error": {"code": code, "message": message}, "correlation_id": correlation_id}
    return JSONResponse(body, status_code=status, headers={"X-Correlation-Id": correlation_id, **headers})


def create_local_api(
    handler: LambdaHandler,
    *,
    stage: str = "local",
    extra_routes: Sequence[BaseRoute] | None = None,
    authorizer: LocalAuthorizer | None = None,
    shed_when_busy: bool = False,
) -> Starlette:
    """A Starlette app sending every request, but those ``extra_routes`` match, through the handler.

    With an ``authorizer``, routes that need a scope (:mod:`shared.auth`) need a credential (401
    without one) and are throttled per client (429), as API Gateway's authorizer and usage plan do.
    """
    # One Lambda execution environment runs one invocation at a time, and handler code relies on it:
    # Powertools keeps the current event on the resolver, a module-level object. So invocations queue
    # here instead of overlapping (a second "environment" would need a second copy of the module). They
    # queue on the event loop, not in worker threads, so extra routes (static files) are never starved.
    invocation_lock = anyio.Lock()
    stage_prefix = f"/{stage}"

    async def proxy(request: Request) -> Response:
        # The path as the client sent it, still percent-encoded, as API Gateway REST passes it on.
        raw_path = request.scope.get("raw_path")
        path = raw_path.decode("latin-1") if raw_path else request.url.path
        path = path.split("?", 1)[0]
        stage_in_path = path == stage_prefix or path.startswith(stage_prefix + "/")
        if stage_in_path:
            path = path[len(stage_prefix) :] or "/"
        event = proxy_event(
            request.method,
            path,
            # ASGI servers lower-case header names, so the client's own case is lost before we see it.
            # Title-Case is what most HTTP/1.1 clients send and what `sam local start-api` passes on.
            [(_title_case(name), value) for name, value in request.headers.items()],
            request.query_params.multi_items(),
            await request.body(),
            request.client.host if request.client else "127.0.0.1",
            stage,
            stage_in_path=stage_in_path,
        )
        request_id = event["requestContext"]["requestId"]
        if authorizer is not None and auth.required_scope(request.method, path) is not None:
            correlation_id = request.headers.get("x-correlation-id") or request_id
            caller = authorizer.authenticate(request.headers)
            if caller is None:
                return _refusal(
                    401,
                    "unauthorized",
                    "send a valid credential: 'Authorization: Bearer <token>' or 'x-api-key: <token>'",
                    correlation_id,
                    {"WWW-Authenticate": "Bearer", "x-amzn-RequestId": request_id},
                )
            wait_s = authorizer.retry_after(caller.principal)
            if wait_s is not None:
                return _refusal(
                    429,
                    "too_many_requests",
                    f"more than {authorizer.requests_per_minute} requests a minute from {caller.principal}",
                    correlation_id,
                    {"Retry-After": str(max(1, math.ceil(wait_s))), "x-amzn-RequestId": request_id},
                )
            context = event["requestContext"]
            if caller.via_api_key:
                context["identity"]["apiKeyId"] = caller.principal  # the key's id, never the key
            # The credential's scopes whichever header carried it, as the authorizer's claims.
            context["authorizer"] = {
                "principalId": caller.principal,
                "claims": {"sub": caller.principal, "scope": " ".join(sorted(caller.scopes))},
            }
        others_waiting = False
        try:
            async with invocation_lock:
                # The handler is synchronous and blocks on HTTP calls: keep it off the event loop.
                result = await run_in_threadpool(handler, event, LocalLambdaContext())
                others_waiting = invocation_lock.statistics().tasks_waiting > 0  # before the release
        except Exception:
            # Lambda reports the failure and API Gateway answers 502; the traceback stays in the log.
            log.exception("the Lambda handler raised (request id %s)", request_id)
            response: Response = _error(
                502, "handler_crashed", f"The function failed; the server log has request id {request_id}."
            )
        else:
            try:
                response = http_response_from_proxy(result)
            except MalformedProxyResponse as error:
                log.error("malformed Lambda proxy response (request id %s): %s", request_id, error)
                response = _error(
                    502,
                    "malformed_proxy_response",
                    f"The function's result is not a valid proxy response; the server log has request id "
                    f"{request_id}.",
                )
        response.headers["x-amzn-RequestId"] = request_id  # as API Gateway adds to every answer
        if shed_when_busy and others_waiting:
            response.headers["Connection"] = "close"
        return response

    routes = [*(extra_routes or []), Route("/{path:path}", proxy, methods=HTTP_METHODS)]
    # A body the Lambda could not be invoked with is refused before it is read (413).
    return Starlette(routes=routes, middleware=[Middleware(BodySizeLimit, max_bytes=MAX_API_BODY_BYTES)])
