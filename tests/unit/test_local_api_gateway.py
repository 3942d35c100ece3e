"""The local stand-in for API Gateway: HTTP in, proxy event to the handler, proxy result back out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.shared.cookies import Cookie
from pydantic import BaseModel
from starlette.testclient import TestClient

from local.api_gateway import LocalLambdaContext, create_local_api, proxy_event

resolver = APIGatewayRestResolver(enable_validation=True)
seen: list[dict[str, Any]] = []


class Item(BaseModel):
    name: str
    count: int


@resolver.get("/items")
def list_items() -> dict[str, Any]:
    return {"q": resolver.current_event.multi_value_query_string_parameters}


@resolver.post("/items")
def add_item(item: Item) -> dict[str, Any]:
    return {"added": item.name, "count": item.count}


@resolver.get("/cookies")
def cookies() -> Response[str]:
    return Response(
        200, "text/plain", "ok", cookies=[Cookie(name="a", value="1"), Cookie(name="b", value="2")]
    )


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    seen.append(event)
    if event["path"] == "/crash":
        raise RuntimeError("secret internal detail")
    if event["path"] == "/upload":  # a raw proxy handler, to see the body exactly as the adapter sent it
        size = len(base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode())
        return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": f"{size} bytes"}
    result: dict[str, Any] = resolver.resolve(event, context)
    return result


@pytest.fixture
def client() -> TestClient:
    seen.clear()
    return TestClient(create_local_api(handler))


def test_query_parameters_and_the_request_reach_the_route(client: TestClient) -> None:
    response = client.get("/items?tag=a&tag=b&page=2", headers={"X-Custom": "yes"})
    assert response.status_code == 200
    assert response.json() == {"q": {"tag": ["a", "b"], "page": ["2"]}}
    event = seen[-1]
    assert event["httpMethod"] == "GET" and event["path"] == "/items"
    assert event["queryStringParameters"] == {"tag": "b", "page": "2"}
    assert event["headers"]["x-custom"] == "yes" and event["requestContext"]["stage"] == "local"


def test_json_bodies_are_validated_by_the_handler(client: TestClient) -> None:
    assert client.post("/items", json={"name": "a", "count": 2}).json() == {"added": "a", "count": 2}
    assert client.post("/items", json={"name": "a", "count": "many"}).status_code == 422


def test_binary_bodies_travel_base64_encoded(client: TestClient) -> None:
    payload = bytes(range(256))
    response = client.post("/upload", content=payload, headers={"Content-Type": "application/octet-stream"})
    assert response.text == "256 bytes"
    assert seen[-1]["isBase64Encoded"] is True and base64.b64decode(seen[-1]["body"]) == payload


def test_repeated_response_headers_come_back_repeated(client: TestClient) -> None:
    response = client.get("/cookies")
    assert sorted(response.headers.get_list("set-cookie")) == ["a=1; Secure", "b=2; Secure"]


def test_a_crashing_handler_gives_502_without_leaking_the_traceback(client: TestClient) -> None:
    response = client.get("/crash")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "handler_crashed"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_the_event_has_every_key_of_an_api_gateway_proxy_event() -> None:
    event = proxy_event(
        "POST", "/api/v1/predict", [("Content-Type", "application/json")], [], b"{}", "127.0.0.1"
    )
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
    assert set(event) == sam_keys
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
        "domainName",
    }
    assert context_keys <= set(event["requestContext"])
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert json.loads(event["body"]) == {} and event["queryStringParameters"] is None


def test_the_local_context_counts_down() -> None:
    context = LocalLambdaContext(timeout_s=5)
    assert 0 < context.get_remaining_time_in_millis() <= 5_000
