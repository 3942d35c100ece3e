"""The local model server on SageMaker's serving contract, backed by the inference script."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from starlette.testclient import TestClient

from local.servers import free_port, start_model_server, stop, wait_until_ready
from sagemaker_jobs.inference.model_server import create_model_server
from shared.adapters.endpoint import SageMakerEndpoint
from shared.ports import EndpointRejectedInput

RESPONSE_FIELDS = {"claim_id", "risk_level", "risk_score", "confidence", "risk_factors", "model_version"}


@pytest.fixture(scope="module")
def client(model_dir: Path) -> TestClient:
    return TestClient(create_model_server(model_dir, monitoring=None))  # capture is tested elsewhere


def assert_prediction(prediction: dict[str, Any], claim_id: str) -> None:
    assert RESPONSE_FIELDS <= set(prediction)
    assert prediction["claim_id"] == claim_id
    assert prediction["risk_level"] in {"low", "high"}
    assert 0 <= prediction["risk_score"] <= 1 and 0 <= prediction["confidence"] <= 1
    factors = prediction["risk_factors"]
    assert factors, "every score is explained"
    for factor in factors:
        assert not re.fullmatch(r"f\d+", factor["factor"]), "factor names are readable"
        assert 0 < factor["importance"] <= 1
    assert [f["importance"] for f in factors] == sorted((f["importance"] for f in factors), reverse=True)


def test_ping_answers_without_a_request_body(client: TestClient) -> None:
    assert client.get("/ping").status_code == 200


@pytest.mark.parametrize("path", ["/invocations", "/endpoints/claims-risk/invocations"])
def test_brief_requests_are_scored_with_readable_factors(
    client: TestClient, path: str, predict_requests: list[dict[str, Any]]
) -> None:
    response = client.post(path, json={"instances": predict_requests})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    predictions = response.json()["predictions"]
    for request, prediction in zip(predict_requests, predictions, strict=True):
        assert_prediction(prediction, request["claim_id"])


def test_csv_without_header_and_json_lines(client: TestClient, model_dir: Path) -> None:
    from shared.feature_spec import ColumnRole, FeatureSpec

    spec = FeatureSpec.from_file(model_dir / "feature_spec.json")
    columns = [c.name for c in spec.columns if c.role != ColumnRole.IGNORE]
    row = {
        "claim_id": "CSV-1",
        "claim_amount": "24000",
        "claim_type": "auto",
        "customer_age": "30",
        "policy_tenure": "0",
        "claim_history": "3",
        "location": "rural",
        "sum_insured": "25000",
        "description": "claimant requests cash settlement",
    }
    line = ",".join(row.get(c, "") for c in columns)
    response = client.post(
        "/invocations",
        content=line + "\n",
        headers={"Content-Type": "text/csv", "Accept": "application/jsonlines"},
    )
    assert response.status_code == 200
    [prediction] = [json.loads(x) for x in response.text.splitlines()]
    assert_prediction(prediction, "CSV-1")
    assert prediction["risk_level"] == "high"  # near the limit, history, red-flag text: clearly risky


def test_the_same_claim_gets_the_same_answer_in_every_format(client: TestClient) -> None:
    claim = {
        "claim_id": "SAME-1",
        "claim_amount": 900.0,
        "claim_type": "home",
        "customer_age": 50,
        "policy_tenure": 12,
        "claim_history": 0,
        "location": "suburban",
    }
    as_json = client.post("/invocations", json=claim).json()["predictions"][0]
    as_lines = client.post(
        "/invocations", content=json.dumps(claim) + "\n", headers={"Content-Type": "application/jsonlines"}
    ).json()["predictions"][0]
    as_csv = client.post(
        "/invocations",
        content="claim_id,claim_amount,claim_type,customer_age,policy_tenure,"
        "claim_history,location\nSAME-1,900,home,50,12,0,suburban\n",
        headers={"Content-Type": "text/csv"},
    ).json()["predictions"][0]
    assert as_json["risk_score"] == as_lines["risk_score"] == as_csv["risk_score"]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("{broken", "application/json", "malformed JSON"),
        ('{"claim_id": "X", "claim_amount": "lots"}', "application/json", "claim_amount"),
        ("<claim/>", "application/xml", "unsupported content type"),
        ("", "application/json", "empty"),
    ],
)
def test_bad_input_gets_400_with_the_reason(
    client: TestClient, body: str, content_type: str, message: str
) -> None:
    response = client.post("/invocations", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def running_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("logs") / "model_server.log"
    with pytest.MonkeyPatch.context() as env:  # its capture and metrics go to a test folder, not ./data
        env.setenv("CLAIMS_RISK_HOME", str(tmp_path_factory.mktemp("home")))
        process = start_model_server(model_dir, "127.0.0.1", port, log)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/ping", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def test_an_unchanged_boto3_client_reaches_the_local_server(
    running_server: str, monkeypatch: pytest.MonkeyPatch, predict_requests: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", running_server)
    runtime = boto3.client("sagemaker-runtime", region_name="eu-west-1")
    response = runtime.invoke_endpoint(
        EndpointName="claims-risk",
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps({"instances": predict_requests}),
    )
    predictions = json.loads(response["Body"].read())["predictions"]
    assert [p["claim_id"] for p in predictions] == [r["claim_id"] for r in predict_requests]
    # And through the port's AWS adapter, which the Lambda uses.
    adapter = SageMakerEndpoint("claims-risk", client=runtime)
    assert_prediction(adapter.invoke(predict_requests[:1])[0], predict_requests[0]["claim_id"])
    with pytest.raises(EndpointRejectedInput):
        adapter.invoke([{"claim_id": "BAD", "claim_amount": "lots"}])
