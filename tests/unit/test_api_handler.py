"""The API Lambda's handler, fed API Gateway proxy events, with a fake model endpoint behind the port."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from lambdas.api import handler
from shared.ports import EndpointError, EndpointRejectedInput
from tests.factories import minimal_claim

EVENT = json.loads((Path(__file__).parent / "events" / "apigateway_aws_proxy.json").read_text())
GOOD_CLAIM = minimal_claim(claim_id="CLM-9")


class FakeEndpoint:
    """Scores every claim 0.7 and remembers what it was sent."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[Mapping[str, Any]] = []
        self.fail = fail

    def invoke(self, claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if self.fail:
            raise self.fail
        self.sent.extend(claims)
        return [
            {
                "claim_id": c["claim_id"],
                "risk_level": "high",
                "risk_score": 0.7,
                "confidence": 0.7,
                "risk_factors": [
                    {
                        "factor": "claim_history",
                        "importance": 0.6,
                        "direction": "increases_risk",
                        "contribution": 0.4,
                    }
                ],
                "model_version": "test-1",
                "threshold": 0.2,
            }
            for c in claims
        ]

    def describe(self) -> str:
        return "fake"


class Context:
    function_name = "claims-risk-api"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:claims-risk-api"
    memory_limit_in_mb = 512
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/claims-risk-api"
    log_stream_name = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    handler.use_endpoint(fake)
    yield fake
    handler.use_endpoint(None)


def call(
    method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    event.update(httpMethod=method, path=path, body=body, pathParameters={"proxy": path.lstrip("/")})
    event["requestContext"].update(httpMethod=method, path=f"/prod{path}")
    for name, value in (headers or {}).items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    response: dict[str, Any] = handler.lambda_handler(event, Context())
    return response


def header(response: dict[str, Any], name: str) -> str:
    merged = {
        **{k: v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()},
        **(response.get("headers") or {}),
    }
    return str({k.lower(): v for k, v in merged.items()}[name.lower()])


def test_a_valid_claim_is_scored_through_the_port(
    endpoint: FakeEndpoint, predict_requests: list[dict[str, Any]]
) -> None:
    for request in predict_requests:
        response = call("POST", "/api/v1/predict", json.dumps(request))
        assert response["statusCode"] == 200, response["body"]
        body = json.loads(response["body"])
        assert body["claim_id"] == request["claim_id"]
        assert {
            "risk_level",
            "risk_score",
            "confidence",
            "risk_factors",
            "model_version",
            "processing_time_ms",
            "timestamp",
        } <= set(body)
    # Only validated, known fields reach the endpoint; absent optional fields are not sent as nulls.
    assert endpoint.sent[0] == predict_requests[0]


def test_the_correlation_id_is_echoed_or_taken_from_the_request_context(endpoint: FakeEndpoint) -> None:
    given = call("POST", "/api/v1/predict", json.dumps(GOOD_CLAIM), {"X-Correlation-Id": "abc-123"})
    assert header(given, "X-Correlation-Id") == "abc-123"
    generated = call("POST", "/api/v1/predict", json.dumps(GOOD_CLAIM))
    assert header(generated, "X-Correlation-Id") == EVENT["requestContext"]["requestId"]


@pytest.mark.parametrize(
    ("body", "status", "fields"),
    [
        ({k: v for k, v in GOOD_CLAIM.items() if k != "claim_amount"}, 422, {"claim_amount"}),
        ({**GOOD_CLAIM, "claim_amount": -1}, 422, {"claim_amount"}),
        ({**GOOD_CLAIM, "customer_age": 500}, 422, {"customer_age"}),
        ({**GOOD_CLAIM, "claim_amount": "fifteen thousand"}, 422, {"claim_amount"}),
        ({**GOOD_CLAIM, "claim_history": "1"}, 422, {"claim_history"}),
        ({**GOOD_CLAIM, "incident_date": "2024-05-02", "report_date": "2024-05-01"}, 422, {"report_date"}),
        (None, 422, {"body"}),
        ("{malformed", 400, set()),
        ("[]", 422, {"body"}),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_never_reaches_the_model(
    endpoint: FakeEndpoint, body: Any, status: int, fields: set[str]
) -> None:
    raw = body if body is None or isinstance(body, str) else json.dumps(body)
    response = call("POST", "/api/v1/predict", raw)
    assert response["statusCode"] == status, response["body"]
    error = json.loads(response["body"])
    assert error["error"]["message"] and error["correlation_id"]
    assert fields <= {d["field"] for d in error["error"].get("details", [])}
    assert endpoint.sent == []


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (EndpointError("boom"), 502, "model_unavailable"),
        (EndpointRejectedInput("claim_amount: bad"), 422, "rejected_by_model"),
    ],
)
def test_endpoint_failures_map_to_clear_errors(failure: Exception, status: int, code: str) -> None:
    handler.use_endpoint(FakeEndpoint(fail=failure))
    try:
        response = call("POST", "/api/v1/predict", json.dumps(GOOD_CLAIM))
    finally:
        handler.use_endpoint(None)
    assert response["statusCode"] == status
    assert json.loads(response["body"])["error"]["code"] == code
    assert "boom" not in response["body"]  # internal reasons stay in the logs


def test_health_reports_the_dependency(endpoint: FakeEndpoint) -> None:
    response = call("GET", "/health")
    body = json.loads(response["body"])
    assert response["statusCode"] == 200 and body["status"] == "healthy" and body["version"]
    assert body["dependencies"] == {"model_endpoint": "fake"}


def test_health_is_degraded_when_no_endpoint_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEMAKER_ENDPOINT_NAME", raising=False)
    monkeypatch.delenv("CLAIMS_RISK_MODEL_URL", raising=False)
    handler.use_endpoint(None)
    body = json.loads(call("GET", "/health")["body"])
    assert body["status"] == "degraded"


def test_unknown_routes_get_404_in_the_error_shape(endpoint: FakeEndpoint) -> None:
    response = call("GET", "/api/v1/nothing-here")
    assert response["statusCode"] == 404 and json.loads(response["body"])["error"]["code"] == "not_found"


def test_the_openapi_document_is_generated_from_the_models(endpoint: FakeEndpoint) -> None:
    response = call("GET", "/swagger", headers={})
    assert response["statusCode"] == 200
    event = copy.deepcopy(EVENT)
    event.update(
        httpMethod="GET",
        path="/swagger",
        body=None,
        queryStringParameters={"format": "json"},
        multiValueQueryStringParameters={"format": ["json"]},
    )
    document = json.loads(handler.lambda_handler(event, Context())["body"])
    claim_schema = document["components"]["schemas"]["Claim"]
    assert {"claim_amount", "customer_age", "location"} <= set(claim_schema["required"])
    assert claim_schema["properties"]["customer_age"]["maximum"] == 110
    assert "/api/v1/predict" in document["paths"] and "/health" in document["paths"]
