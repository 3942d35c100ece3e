"""The local API's authorizer and throttle: the same rules API Gateway enforces in AWS."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from lambdas.api import handler
from local.api_gateway import LocalLambdaContext, create_local_api
from local.auth import Credential, LocalAuthorizer, authorizer_from_env, local_token
from shared import auth
from shared.adapters.pipeline_starter import LocalPipelineStarter
from tests.factories import minimal_claim
from tests.unit.test_api_handler import MANIFEST, FakeCatalog, FakeEndpoint, FakeStarter

ADMIN, READER = "admin-token", "reader-token"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(clock: Clock) -> Iterator[tuple[TestClient, FakeEndpoint, FakeStarter, list[dict[str, Any]]]]:
    endpoint, starter = FakeEndpoint(), FakeStarter()
    handler.use_ports(endpoint=endpoint, catalog=FakeCatalog(MANIFEST), starter=starter)
    events: list[dict[str, Any]] = []

    def recording_handler(event: dict[str, Any], context: LocalLambdaContext) -> dict[str, Any]:
        events.append(event)
        result: dict[str, Any] = handler.lambda_handler(event, context)
        return result

    authorizer = LocalAuthorizer(
        {
            ADMIN: Credential("claims-system", frozenset(auth.ALL_SCOPES)),
            READER: Credential("auditor", frozenset({auth.READ_MODELS})),
        },
        requests_per_minute=3,
        clock=clock,
    )
    with TestClient(create_local_api(recording_handler, authorizer=authorizer)) as test_client:
        yield test_client, endpoint, starter, events
    handler.use_ports()


Client = tuple[TestClient, FakeEndpoint, FakeStarter, list[dict[str, Any]]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_or_a_wrong_credential_gets_401_and_never_reaches_the_handler(client: Client) -> None:
    test_client, endpoint, _, events = client
    for headers in ({}, bearer("guess"), {"x-api-key": "guess"}, {"Authorization": ADMIN}):
        response = test_client.post("/api/v1/predict", json=minimal_claim(), headers=headers)
        assert response.status_code == 401
        assert (
            response.json()["error"]["code"] == "unauthorized"
            and response.headers["www-authenticate"] == "Bearer"
        )
    assert events == [] and endpoint.sent == []
    assert test_client.get("/health").status_code == 200  # public routes need no credential


def test_a_bearer_token_reaches_the_handler_as_the_authorizers_claims(client: Client) -> None:
    test_client, _, _, events = client
    response = test_client.post("/api/v1/predict", json=minimal_claim(), headers=bearer(ADMIN))
    assert response.status_code == 200
    claims = events[-1]["requestContext"]["authorizer"]["claims"]
    assert claims["sub"] == "claims-system" and auth.PREDICT in claims["scope"].split()
    assert ADMIN not in json.dumps(events[-1]["requestContext"])


def test_a_credential_has_the_same_scopes_whichever_header_carries_it(client: Client) -> None:
    test_client, endpoint, starter, events = client
    for headers in (bearer(READER), {"x-api-key": READER}):  # a model reader never scores claims
        refused = test_client.post("/api/v1/predict", json=minimal_claim(), headers=headers)
        assert refused.status_code == 403 and "claims-risk/predict" in refused.json()["error"]["message"]
    assert endpoint.sent == []
    assert test_client.get("/api/v1/models/current", headers={"x-api-key": READER}).status_code == 200
    scored = test_client.post("/api/v1/predict", json=minimal_claim(), headers={"x-api-key": ADMIN})
    assert scored.status_code == 200
    assert events[-1]["requestContext"]["identity"]["apiKeyId"] == "claims-system"
    assert events[-1]["requestContext"]["authorizer"]["claims"]["sub"] == "claims-system"
    started = test_client.post("/api/v1/models/retrain", json={}, headers={"x-api-key": ADMIN})
    assert started.status_code == 202 and len(starter.started) == 1


def test_a_token_without_the_retrain_scope_gets_403_and_with_it_202(client: Client) -> None:
    test_client, _, starter, _ = client
    assert test_client.get("/api/v1/models/current", headers=bearer(READER)).status_code == 200
    refused = test_client.post("/api/v1/models/retrain", json={}, headers=bearer(READER))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    assert starter.started == []
    started = test_client.post("/api/v1/models/retrain", json={"cv_folds": 3}, headers=bearer(ADMIN))
    assert started.status_code == 202 and starter.started[0][1] == {"cv_folds": 3}


def test_a_client_over_its_rate_gets_429_until_its_window_has_room(client: Client, clock: Clock) -> None:
    test_client, _, _, _ = client
    for _ in range(3):
        assert test_client.get("/api/v1/models/current", headers=bearer(READER)).status_code == 200
    throttled = test_client.get("/api/v1/models/current", headers=bearer(READER))
    assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "too_many_requests"
    assert int(throttled.headers["retry-after"]) == 60
    # Another client has its own allowance.
    assert test_client.get("/api/v1/models/current", headers=bearer(ADMIN)).status_code == 200
    clock.now += 60.0
    assert test_client.get("/api/v1/models/current", headers=bearer(READER)).status_code == 200


def test_the_local_credential_comes_from_the_environment_or_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAIMS_RISK_API_TOKEN", raising=False)
    made = local_token(tmp_path)
    assert len(made) >= 40 and local_token(tmp_path) == made
    assert (tmp_path / "api-token").stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("CLAIMS_RISK_API_TOKEN", "chosen")
    monkeypatch.setenv("CLAIMS_RISK_THROTTLE_PER_MINUTE", "0")
    authorizer = authorizer_from_env(tmp_path)
    caller = authorizer.authenticate({"authorization": "Bearer chosen"})
    assert caller is not None and caller.scopes == frozenset(auth.ALL_SCOPES)
    assert all(authorizer.retry_after("x") is None for _ in range(500))  # 0 turns throttling off


def test_the_local_pipeline_starter_runs_the_pipeline_command_with_the_run_id(tmp_path: Path) -> None:
    record = tmp_path / "argv.txt"
    script = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))"
    starter = LocalPipelineStarter(tmp_path, [sys.executable, "-c", script, str(record)])
    assert starter.start("retrain-1", {"tuning_trials": 4, "reason": "ignored"}) == "retrain-1"
    for _ in range(100):
        if record.exists():
            break
        time.sleep(0.05)
    assert record.read_text() == "--run-id retrain-1 --trials 4"
    assert (tmp_path / "logs" / "retrain-retrain-1.log").exists()
