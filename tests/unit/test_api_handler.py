"""The API Lambda's handler, fed API Gateway proxy events, with a fake model endpoint behind the port."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from lambdas.api import handler
from shared import auth
from shared.ports import EndpointError, EndpointRejectedInput, ModelCatalogError
from tests.aws_fakes import FakeLambdaContext
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


def Context() -> FakeLambdaContext:  # noqa: N802 (reads like the class it stands for)
    return FakeLambdaContext("claims-risk-api")


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    handler.use_endpoint(fake)
    yield fake
    handler.use_endpoint(None)


def call(
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    scopes: str | None = " ".join(auth.ALL_SCOPES),
) -> dict[str, Any]:
    """The request carries a Cognito token with ``scopes`` (the authorizer's claims; every scope unless
    told); None: no token at all."""
    event = copy.deepcopy(EVENT)
    event.update(httpMethod=method, path=path, body=body, pathParameters={"proxy": path.lstrip("/")})
    event["requestContext"].update(httpMethod=method, path=f"/prod{path}")
    if scopes is not None:
        event["requestContext"]["authorizer"] = {"claims": {"sub": "handler-7", "scope": scopes}}
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


# --- batch, model card, retrain, scopes -------------------------------------------------------------


class FakeCatalog:
    def __init__(self, manifest: dict[str, Any] | None) -> None:
        self.manifest = manifest

    def current_manifest(self) -> Mapping[str, Any]:
        if self.manifest is None:
            raise ModelCatalogError("nothing deployed")
        return self.manifest


class FakeStarter:
    def __init__(self) -> None:
        self.started: list[tuple[str, Mapping[str, Any]]] = []

    def start(self, execution_id: str, inputs: Mapping[str, Any]) -> str:
        self.started.append((execution_id, inputs))
        return execution_id


MANIFEST = {
    "model_version": "20261125.1-xgboost-ab",
    "family": "xgboost",
    "created_at": "2026-11-25T10:00:00+00:00",
    "threshold": 0.18,
    "costs": {"missed_high_risk": 5.0, "needless_review": 1.0},
    "metrics": {"test": {"roc_auc": 0.89}, "validation": {"roc_auc": 0.9}},
    "explanation_method": "exact TreeSHAP",
    "lineage": {"data_sha256": "ab" * 32, "code_version": "abc123"},
    "calibration": {"slope": 1.0, "intercept": 0.0},
    "files": ["model.ubj"],
}


@pytest.fixture
def ports(endpoint: FakeEndpoint) -> Iterator[tuple[FakeEndpoint, FakeCatalog, FakeStarter]]:
    catalog, starter = FakeCatalog(MANIFEST), FakeStarter()
    handler.use_ports(endpoint=endpoint, catalog=catalog, starter=starter)
    yield endpoint, catalog, starter
    handler.use_ports()


def test_a_batch_is_scored_in_order_with_a_summary(endpoint: FakeEndpoint, contract: dict[str, Any]) -> None:
    [request] = contract["predict_batch"]["requests"]
    response = call("POST", "/api/v1/predict/batch", json.dumps(request))
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert [p["claim_id"] for p in body["predictions"]] == [c["claim_id"] for c in request["claims"]]
    assert body["count"] == 2 and body["high_risk_count"] == 2 and body["model_version"] == "test-1"


def test_one_bad_claim_rejects_the_whole_batch_naming_its_position(endpoint: FakeEndpoint) -> None:
    claims = [minimal_claim(claim_id=f"C-{i}") for i in range(1000)]
    claims[3]["claim_amount"] = -5
    del claims[998]["claim_type"]
    response = call("POST", "/api/v1/predict/batch", json.dumps({"claims": claims}))
    assert response["statusCode"] == 422
    fields = {d["field"] for d in json.loads(response["body"])["error"]["details"]}
    assert fields == {"claims.3.claim_amount", "claims.998.claim_type"}
    assert endpoint.sent == []  # nothing scored half-way


@pytest.mark.parametrize("size", [0, 1001])
def test_an_empty_or_oversized_batch_gets_a_clear_422(endpoint: FakeEndpoint, size: int) -> None:
    claims = [minimal_claim(claim_id=f"C-{i}") for i in range(size)]
    response = call("POST", "/api/v1/predict/batch", json.dumps({"claims": claims}))
    assert response["statusCode"] == 422
    body = json.loads(response["body"])
    assert body["error"]["details"][0]["field"] == "claims"
    assert ("at most 1000" if size else "at least 1") in body["error"]["details"][0]["message"]
    assert endpoint.sent == []


def test_a_batch_of_1000_is_scored(endpoint: FakeEndpoint) -> None:
    claims = [minimal_claim(claim_id=f"C-{i}") for i in range(1000)]
    response = call("POST", "/api/v1/predict/batch", json.dumps({"claims": claims}))
    assert response["statusCode"] == 200 and json.loads(response["body"])["count"] == 1000


def test_the_model_card_describes_the_serving_model(
    ports: tuple[FakeEndpoint, FakeCatalog, FakeStarter],
) -> None:
    response = call("GET", "/api/v1/models/current", scopes="claims-risk/models.read")
    assert response["statusCode"] == 200, response["body"]
    card = json.loads(response["body"])
    assert card["model_version"] == MANIFEST["model_version"] and card["family"] == "xgboost"
    assert card["metrics"]["test"]["roc_auc"] == 0.89 and card["threshold"] == 0.18
    assert card["lineage"]["data_sha256"] == "ab" * 32
    ports[1].manifest = None
    missing = call("GET", "/api/v1/models/current")
    assert missing["statusCode"] == 503 and json.loads(missing["body"])["error"]["code"] == "no_model"


def test_retrain_starts_the_pipeline_with_the_retrain_scope_only(
    ports: tuple[FakeEndpoint, FakeCatalog, FakeStarter],
) -> None:
    starter = ports[2]
    for scopes in (None, "claims-risk/predict claims-risk/models.read"):
        refused = call("POST", "/api/v1/models/retrain", "{}", scopes=scopes)
        assert refused["statusCode"] == 403 and "claims-risk/retrain" in refused["body"]
    assert starter.started == []
    started = call(
        "POST",
        "/api/v1/models/retrain",
        json.dumps({"tuning_trials": 5, "reason": "drift"}),
        scopes="claims-risk/retrain",
    )
    assert started["statusCode"] == 202, started["body"]
    body = json.loads(started["body"])
    assert body["status"] == "started" and body["execution_id"].startswith("retrain-")
    assert starter.started == [(body["execution_id"], {"tuning_trials": 5})]
    bad = call(
        "POST", "/api/v1/models/retrain", json.dumps({"tuning_trials": -1}), scopes="claims-risk/retrain"
    )
    assert bad["statusCode"] == 422


def test_a_token_without_the_predict_scope_is_refused(endpoint: FakeEndpoint) -> None:
    response = call("POST", "/api/v1/predict", json.dumps(GOOD_CLAIM), scopes="claims-risk/models.read")
    assert response["statusCode"] == 403 and endpoint.sent == []
    allowed = call("POST", "/api/v1/predict", json.dumps(GOOD_CLAIM), scopes="claims-risk/predict")
    assert allowed["statusCode"] == 200


def test_the_audit_line_names_the_caller_and_model_but_no_personal_field(endpoint: FakeEndpoint) -> None:
    claim = {**GOOD_CLAIM, "description": "Jane Roe rear-ended at the Main St lights"}
    captured = io.StringIO()
    log_handler = handler.logger.registered_handler
    previous = log_handler.setStream(captured)  # type: ignore[attr-defined]
    try:
        call("POST", "/api/v1/predict", json.dumps(claim), scopes="claims-risk/predict")
    finally:
        log_handler.setStream(previous)  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.startswith("{")]
    [audit] = [line for line in lines if line.get("audit")]
    assert audit["caller"] == "handler-7" and audit["model_version"] == "test-1"
    assert audit["claim_id"] == "CLM-9" and audit["correlation_id"]
    assert "Jane" not in json.dumps(lines) and "Main St" not in json.dumps(lines)


def test_a_body_that_is_not_utf8_gets_400_not_a_crash(endpoint: FakeEndpoint) -> None:
    event = copy.deepcopy(EVENT)
    event.update(httpMethod="POST", path="/api/v1/predict", body="qKlZKQnQIjk=", isBase64Encoded=True)
    response = handler.lambda_handler(event, Context())
    assert response["statusCode"] == 400 and json.loads(response["body"])["error"]["code"] == "malformed_body"
    assert endpoint.sent == []
