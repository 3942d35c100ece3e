"""The local stand-in for API Gateway: HTTP in, proxy event to the handler, proxy result back out."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.shared.cookies import Cookie
from pydantic import BaseModel
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from local.api_gateway import (
    LocalLambdaContext,
    MalformedProxyResponse,
    create_local_api,
    http_response_from_proxy,
    proxy_event,
)

resolver = APIGatewayRestResolver(enable_validation=True)
resolver.enable_swagger(path="/swagger", title="test API")
seen: list[dict[str, Any]] = []  # the events the handler received, newest last


class Item(BaseModel):
    name: str
    count: int


@resolver.get("/items")
def list_items() -> dict[str, Any]:
    event = resolver.current_event
    return {
        "tag": event.get_multi_value_query_string_values("tag"),
        "page": event.get_query_string_value("page"),
    }


@resolver.post("/items")
def add_item(item: Item) -> dict[str, Any]:
    return {"added": item.name, "count": item.count}


@resolver.route("/echo", method=["GET", "PUT", "DELETE"])
def echo() -> dict[str, Any]:
    event = resolver.current_event
    return {"method": event.http_method, "path": event.path, "custom": event.headers.get("x-custom")}


@resolver.get("/")
def root() -> dict[str, str]:
    return {"at": "root"}


@resolver.get("/cookies")
def cookies() -> Response[str]:
    return Response(
        200, "text/plain", "ok", cookies=[Cookie(name="a", value="1"), Cookie(name="b", value="2")]
    )


def raw_result(path: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """Hand-written proxy results, to control exactly what the adapter must turn into HTTP."""
    if path == "/crash":
        raise RuntimeError("secret internal detail")
    if path == "/upload":  # the body exactly as the adapter sent it, decoded as a handler must
        data = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
        return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": f"{len(data)} bytes"}
    if path == "/merged-headers":
        return {
            "statusCode": 201,
            "headers": {"X-One": "a", "X-Both": "single", "X-Same": "s"},
            "multiValueHeaders": {"X-Both": ["multi"], "X-Same": ["s"], "X-Many": ["1", "2"]},
            "body": "",
        }
    if path == "/malformed":  # a string where API Gateway wants a list: its "Malformed Lambda proxy response"
        return {"statusCode": 200, "multiValueHeaders": {"X-Bad": "not-a-list"}, "body": "x"}
    if path == "/no-content-type":
        return {"statusCode": 200, "body": '{"ok": true}'}
    if path == "/slow":  # overlaps with its neighbours unless invocations are serialised
        time.sleep(0.02)
        return {"statusCode": 200, "body": "slow"}
    return None


in_flight = [0]  # invocations running now
overlaps: list[int] = []  # how many were running as each one started


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    seen.append(event)
    in_flight[0] += 1
    overlaps.append(in_flight[0])
    try:
        result = raw_result(event["path"], event)
        if result is not None:
            return result
        resolved: dict[str, Any] = resolver.resolve(event, context)
        return resolved
    finally:
        in_flight[0] -= 1


@pytest.fixture
def client() -> Iterator[TestClient]:
    seen.clear()
    overlaps.clear()
    with TestClient(create_local_api(handler)) as test_client:
        yield test_client


def test_query_parameters_reach_the_route(client: TestClient) -> None:
    response = client.get("/items?tag=a&tag=b&page=2")
    assert response.status_code == 200
    assert response.json() == {"tag": ["a", "b"], "page": "2"}
    event = seen[-1]
    assert event["queryStringParameters"] == {"tag": "b", "page": "2"}  # the last value, as API Gateway
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "page": ["2"]}


def test_no_query_string_gives_none_as_api_gateway_does(client: TestClient) -> None:
    client.get("/items")
    assert seen[-1]["queryStringParameters"] is None
    assert seen[-1]["multiValueQueryStringParameters"] is None


def test_json_bodies_are_validated_by_the_handler(client: TestClient) -> None:
    valid = client.post("/items", json={"name": "a", "count": 2})
    assert valid.status_code == 200 and valid.json() == {"added": "a", "count": 2}
    invalid = client.post("/items", json={"name": "a", "count": "many"})
    assert invalid.status_code == 422
    assert any(detail["loc"][-1] == "count" for detail in invalid.json()["detail"])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_method_path_and_headers_round_trip(client: TestClient, method: str) -> None:
    response = client.request(method, "/echo", headers={"x-custom": "yes"})
    assert response.json() == {"method": method, "path": "/echo", "custom": "yes"}
    # ASGI lower-cases names; the handler sees them in the case HTTP/1.1 clients and API Gateway use.
    assert seen[-1]["headers"]["X-Custom"] == "yes"


def test_repeated_request_headers_keep_every_value(client: TestClient) -> None:
    client.get("/echo", headers=[("X-Dup", "1"), ("X-Dup", "2")])
    assert seen[-1]["headers"]["X-Dup"] == "2"
    assert seen[-1]["multiValueHeaders"]["X-Dup"] == ["1", "2"]


def test_the_root_path_reaches_the_handler(client: TestClient) -> None:
    assert client.get("/").json() == {"at": "root"}
    assert seen[-1]["resource"] == "/" and seen[-1]["pathParameters"] is None


def test_the_stage_prefixed_url_reaches_the_same_route(client: TestClient) -> None:
    assert client.get("/local/items?page=3").json()["page"] == "3"
    event = seen[-1]
    assert event["path"] == "/items" and event["requestContext"]["path"] == "/local/items"
    client.get("/items")
    assert seen[-1]["requestContext"]["path"] == "/items"


@pytest.mark.parametrize(
    ("url", "server"), [("/swagger?format=json", "/"), ("/local/swagger?format=json", "/local")]
)
def test_swagger_try_it_out_targets_a_url_this_server_answers(
    client: TestClient, url: str, server: str
) -> None:
    spec = client.get(url).json()
    assert spec["servers"] == [{"url": server}]
    base = "" if server == "/" else server
    assert client.get(f"{base}/items").status_code == 200


def test_repeated_response_headers_come_back_repeated(client: TestClient) -> None:
    response = client.get("/cookies")
    assert sorted(response.headers.get_list("set-cookie")) == ["a=1; Secure", "b=2; Secure"]


def test_headers_and_multi_value_headers_merge_as_in_api_gateway(client: TestClient) -> None:
    response = client.get("/merged-headers")
    assert response.status_code == 201
    assert response.headers.get_list("x-one") == ["a"]
    assert response.headers.get_list("x-many") == ["1", "2"]
    assert response.headers.get_list("x-both") == ["multi", "single"]
    assert response.headers.get_list("x-same") == ["s"]  # a pair given in both appears once


def test_a_response_without_content_type_is_json(client: TestClient) -> None:
    response = client.get("/no-content-type")
    assert response.headers["content-type"] == "application/json" and response.json() == {"ok": True}


def test_binary_bodies_travel_base64_encoded(client: TestClient) -> None:
    payload = bytes(range(256))
    response = client.post("/upload", content=payload, headers={"Content-Type": "application/octet-stream"})
    assert response.text == "256 bytes"
    assert seen[-1]["isBase64Encoded"] is True and base64.b64decode(seen[-1]["body"]) == payload


def test_text_bodies_travel_as_they_are(client: TestClient) -> None:
    assert client.post("/upload", content="héllo".encode()).text == "6 bytes"
    assert seen[-1]["isBase64Encoded"] is False and seen[-1]["body"] == "héllo"


def test_a_crashing_handler_gives_502_without_leaking_the_traceback(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="claims_risk.local_api"):
        response = client.get("/crash")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "handler_crashed"
    assert "secret" not in response.text and "Traceback" not in response.text
    request_id = response.headers["x-amzn-requestid"]
    assert request_id == seen[-1]["requestContext"]["requestId"] and request_id in response.text
    assert "secret internal detail" in caplog.text  # the operator still gets the traceback


def test_a_malformed_result_gives_502(client: TestClient) -> None:
    response = client.get("/malformed")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "malformed_proxy_response"


def test_extra_routes_are_matched_before_the_handler() -> None:
    async def page(_: Any) -> PlainTextResponse:
        return PlainTextResponse("static")

    seen.clear()
    with TestClient(create_local_api(handler, extra_routes=[Route("/page", page)])) as test_client:
        assert test_client.get("/page").text == "static"
        assert test_client.get("/items").status_code == 200
    assert [event["path"] for event in seen] == ["/items"]


def test_invocations_do_not_overlap_as_in_one_lambda_environment(client: TestClient) -> None:
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(client.get("/slow").status_code)) for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    assert max(overlaps) == 1


def test_the_event_has_every_key_of_the_sam_local_aws_proxy_event() -> None:
    event = proxy_event(
        "POST",
        "/api/v1/predict",
        [("Content-Type", "application/json"), ("User-Agent", "curl/8"), ("Host", "127.0.0.1:8000")],
        [("explain", "true")],
        b"{}",
        "10.0.0.7",
    )
    # The keys of `sam local generate-event apigateway aws-proxy`.
    sam_keys = {
        "body",
        "resource",
        "path",
        "httpMethod",
        "isBase64Encoded",
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "stageVariables",
        "headers",
        "multiValueHeaders",
        "requestContext",
    }
    context_keys = {
        "accountId",
        "resourceId",
        "stage",
        "requestId",
        "requestTime",
        "requestTimeEpoch",
        "identity",
        "path",
        "resourcePath",
        "httpMethod",
        "apiId",
        "protocol",
    }
    identity_keys = {
        "cognitoIdentityPoolId",
        "accountId",
        "cognitoIdentityId",
        "caller",
        "accessKey",
        "sourceIp",
        "cognitoAuthenticationType",
        "cognitoAuthenticationProvider",
        "userArn",
        "userAgent",
        "user",
    }
    assert sam_keys <= set(event)
    assert context_keys | {"domainName"} <= set(event["requestContext"])
    assert identity_keys <= set(event["requestContext"]["identity"])
    context = event["requestContext"]
    assert event["pathParameters"] == {"proxy": "api/v1/predict"} and event["resource"] == "/{proxy+}"
    assert context["path"] == "/local/api/v1/predict" and context["httpMethod"] == "POST"
    assert context["identity"] == {**context["identity"], "sourceIp": "10.0.0.7", "userAgent": "curl/8"}
    assert context["domainName"] == "127.0.0.1:8000"
    assert event["queryStringParameters"] == {"explain": "true"} and event["body"] == "{}"


def test_each_event_has_its_own_request_id() -> None:
    first, second = (proxy_event("GET", "/", [], [], None, "127.0.0.1") for _ in range(2))
    assert first["requestContext"]["requestId"] != second["requestContext"]["requestId"]
    assert first["body"] is None and first["headers"] is None


def test_http_response_from_proxy_decodes_base64_bodies() -> None:
    payload = b"\x89PNG\x00\xff"
    response = http_response_from_proxy(
        {
            "statusCode": "200",  # API Gateway also accepts the status as a string
            "headers": {"Content-Type": "image/png", "Content-Length": "999"},
            "body": base64.b64encode(payload).decode(),
            "isBase64Encoded": True,
        }
    )
    assert response.status_code == 200 and response.body == payload
    assert response.headers.getlist("content-length") == [str(len(payload))]


@pytest.mark.parametrize(
    "result",
    [
        {"body": "no status"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 999, "body": ""},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
    ],
)
def test_results_api_gateway_would_reject_are_refused(result: dict[str, Any]) -> None:
    with pytest.raises(MalformedProxyResponse):
        http_response_from_proxy(result)


def test_the_local_context_counts_down() -> None:
    context = LocalLambdaContext(timeout_s=5)
    assert 0 < context.get_remaining_time_in_millis() <= 5_000
    assert context.aws_request_id != LocalLambdaContext().aws_request_id


def test_under_up_a_response_sent_while_others_wait_frees_its_connection() -> None:
    """Several API processes share one socket: a busy one hands its clients back to the others."""
    import asyncio

    import httpx

    def slow_handler(event: dict[str, Any], _: Any) -> dict[str, Any]:
        time.sleep(0.2)
        return {"statusCode": 200, "headers": {}, "body": event["path"]}

    async def two_at_once(shed: bool) -> list[httpx.Response]:
        app = create_local_api(slow_handler, shed_when_busy=shed)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            return list(await asyncio.gather(http.get("/first"), http.get("/second")))

    shed = asyncio.run(two_at_once(True))
    assert [r.status_code for r in shed] == [200, 200]
    # The one answered while the other waited closes; the last, with nobody waiting, keeps alive.
    assert sorted(r.headers.get("connection", "keep-alive") for r in shed) == ["close", "keep-alive"]
    kept = asyncio.run(two_at_once(False))
    assert all("connection" not in r.headers for r in kept), "one API process keeps its connections"
