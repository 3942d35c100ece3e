"""The drop-folder trigger checks a CSV's header against the serving model's spec, and answers a refused
file with a note under rejected/: end to end in process, against moto (S3, DynamoDB, SageMaker).

The spec gets there as in AWS: the deploy step's publish_card task (the pipeline-tasks Lambda, with
the state machine's own payload) writes the deployed model's feature_spec.json beside the model card,
and the trigger is given that location as cdk/batch.py gives it.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import tarfile
from collections.abc import Mapping
from typing import Any, Final

import pytest

from lambdas.batch_trigger import handler
from shared.batch_jobs import CSV_COLUMNS_ENV
from shared.feature_spec import FeatureSpec, claims_spec
from step_functions.state_machine import MODEL_SPEC_KEY, DeploymentGuardrails, definition, substitute
from tests.aws_fakes import FakeLambdaContext

# The trigger's moto account (the fixture ``aws``, which pytest finds by this import) and helpers.
from tests.integration.test_batch_trigger import (  # noqa: F401
    BUCKET,
    CSV_BODY,
    CSV_HEADER,
    aws,
    invoke,
    jobs,
    put,
)
from tests.unit.test_serving_spec_and_refusals import FLEET_CSV, FLEET_HEADER, FLEET_REFUSAL, fleet_spec

SPEC_URI: Final = f"s3://{BUCKET}/{MODEL_SPEC_KEY}"  # what cdk/batch.py sets
MODEL_KEY: Final = "pipeline/runs/run-7/model/model.tar.gz"


@pytest.fixture
def trigger(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The trigger as deployed (the ``aws`` account): told where the serving model's spec is published."""
    account: dict[str, Any] = request.getfixturevalue("aws")
    monkeypatch.setenv("CLAIMS_RISK_MODEL_SPEC_S3", SPEC_URI)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    return account


def logged(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def capture_json_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Powertools handler holds the stdout of import time; point it at the one capsys captures
    (in the test's body: capsys's stdout is not yet in place while fixtures are set up)."""
    stream_handler = handler.logger.registered_handler
    assert isinstance(stream_handler, logging.StreamHandler)
    monkeypatch.setattr(stream_handler, "stream", sys.stdout)


def deploy(account: dict[str, Any], spec: FeatureSpec) -> dict[str, Any]:
    """A model trained on ``spec`` now serves: the state machine's model-card task publishes it."""
    from lambdas.pipeline_tasks import handler as tasks

    manifest = {"model_version": f"{spec.name}-1", "family": "xgboost", "threshold": 0.3}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        members = (
            ("model.ubj", b"x" * 10),
            ("manifest.json", json.dumps(manifest).encode()),
            ("feature_spec.json", spec.to_json().encode()),  # as shared.ml.model.write_artifact packs it
        )
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    account["s3"].put_object(Bucket=BUCKET, Key=MODEL_KEY, Body=buffer.getvalue())
    guardrails = DeploymentGuardrails(10, 300, 600, ("a",), "ml.m5.large", 1, 20)
    state = definition(guardrails)["States"]["deploy: model card"]
    payload = json.loads(substitute(json.dumps(state["Parameters"]["Payload"]), {"DataBucket": BUCKET}))
    payload["model"] = f"s3://{BUCKET}/{MODEL_KEY}"  # what "model.$": "$.jobs.train.model" selects
    del payload["model.$"]
    tasks.artifact_store.cache_clear()  # its client must be made inside this moto account
    try:
        result: dict[str, Any] = tasks.lambda_handler(
            payload, FakeLambdaContext("claims-risk-pipeline-tasks")
        )
    finally:
        tasks.artifact_store.cache_clear()
    return result


def body_of(account: dict[str, Any], key: str, version: str | None = None) -> bytes:
    request = {"Bucket": BUCKET, "Key": key, **({"VersionId": version} if version else {})}
    data: bytes = account["s3"].get_object(**request)["Body"].read()
    return data


def note_at(account: dict[str, Any], key: str) -> dict[str, Any]:
    note: dict[str, Any] = json.loads(body_of(account, key))
    return note


def versions_under(account: dict[str, Any], prefix: str) -> list[str]:
    listed = account["s3"].list_object_versions(Bucket=BUCKET, Prefix=prefix)
    return [v["Key"] for v in listed.get("Versions", [])]


def test_publish_card_puts_the_models_spec_beside_the_card(trigger: dict[str, Any]) -> None:
    answer = deploy(trigger, fleet_spec())
    assert answer["spec"] == SPEC_URI and answer["card"] == f"s3://{BUCKET}/models/current/manifest.json"
    published = FeatureSpec.model_validate_json(body_of(trigger, MODEL_SPEC_KEY))
    assert published == fleet_spec()
    assert json.loads(body_of(trigger, "models/current/manifest.json"))["model_version"] == "fleet_claims-1"


def test_a_model_of_another_spec_gets_its_own_csv_scored_in_the_files_column_order(
    trigger: dict[str, Any],
) -> None:
    deploy(trigger, fleet_spec())

    [name] = invoke(put(trigger, "incoming/2026/11/fleet.csv", FLEET_CSV))["started"]

    environment = trigger["sagemaker"].describe_transform_job(TransformJobName=name)["Environment"]
    assert json.loads(environment[CSV_COLUMNS_ENV]) == FLEET_HEADER
    assert versions_under(trigger, "rejected/") == [], "an accepted file gets no note"


def test_a_claims_spec_csv_is_refused_against_that_model_with_a_note_and_nothing_lost(
    trigger: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capture_json_logs(monkeypatch)
    deploy(trigger, fleet_spec())
    key = "incoming/2026/11/claims batch+1.csv"
    event = put(trigger, key, CSV_BODY)
    version = event["Records"][0]["s3"]["object"]["versionId"]

    summary = invoke(event)

    uri = f"s3://{BUCKET}/{key}"
    assert summary == {"started": [], "duplicates": [], "ignored": [uri]}
    assert jobs(trigger) == [], "no job started"
    note = note_at(trigger, "rejected/2026/11/claims batch+1.csv/refused.json")
    assert note["source"] == uri and note["version_id"] == version and note["file"] == "claims batch+1.csv"
    assert note["reason"] == FLEET_REFUSAL
    assert note["spec"] == {"name": "fleet_claims", "version": "2"}
    assert note["state"] == "refused" and note["refused_at"].endswith("+00:00")
    # The dropped file is untouched: the same single version, the same bytes, nothing else written.
    assert body_of(trigger, key, version) == CSV_BODY
    assert versions_under(trigger, "incoming/") == [key]
    assert versions_under(trigger, "rejected/") == ["rejected/2026/11/claims batch+1.csv/refused.json"]
    [refused] = [line for line in logged(capsys) if str(line.get("message", "")).startswith("refused ")]
    assert refused["reason"] == FLEET_REFUSAL and refused["level"] == "WARNING"


def test_before_any_model_is_deployed_the_default_claims_spec_applies_and_the_log_says_so(
    trigger: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capture_json_logs(monkeypatch)
    [name] = invoke(put(trigger, "incoming/claims.csv", CSV_BODY))["started"]
    environment = trigger["sagemaker"].describe_transform_job(TransformJobName=name)["Environment"]
    assert json.loads(environment[CSV_COLUMNS_ENV]) == CSV_HEADER.split(",")
    [fallback] = [line for line in logged(capsys) if "default claims spec" in str(line.get("message"))]
    assert fallback["level"] == "WARNING" and fallback["spec_uri"] == SPEC_URI
    assert fallback["spec"] == claims_spec().name

    # The fleet file names claim_amount but lacks the claims spec's other required columns.
    assert invoke(put(trigger, "incoming/fleet.csv", FLEET_CSV))["started"] == []
    assert "lacks required columns" in note_at(trigger, "rejected/fleet.csv/refused.json")["reason"]


def test_a_newly_deployed_spec_counts_from_the_next_invocation(trigger: dict[str, Any]) -> None:
    assert len(invoke(put(trigger, "incoming/a.csv", CSV_BODY))["started"]) == 1
    deploy(trigger, fleet_spec())
    assert invoke(put(trigger, "incoming/b.csv", CSV_BODY))["started"] == []
    assert len(invoke(put(trigger, "incoming/c.csv", FLEET_CSV))["started"]) == 1
    deploy(trigger, claims_spec())  # and back
    assert len(invoke(put(trigger, "incoming/d.csv", CSV_BODY))["started"]) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ((CSV_HEADER + ",claim_id\n").encode(), "the header repeats columns: claim_id"),
        ((CSV_HEADER + ",r\u00e9gion\n").encode("latin-1"), "its first line is not UTF-8 text"),
        (CSV_HEADER.encode("utf-16"), "UTF-16 text, not UTF-8"),
        ((CSV_HEADER + "," + "x" * 70_000 + "\n").encode(), "too long for a header"),
    ],
    ids=["repeated column", "latin-1", "utf-16", "header too long"],
)
def test_every_refused_header_gets_its_note(trigger: dict[str, Any], body: bytes, reason: str) -> None:
    summary = invoke(put(trigger, "incoming/x/bad.csv", body))
    assert summary["started"] == [] and jobs(trigger) == []
    note = note_at(trigger, "rejected/x/bad.csv/refused.json")
    assert reason in note["reason"] and note["spec"]["name"] == "claims"
    assert body_of(trigger, "incoming/x/bad.csv") == body


def test_a_parquet_file_too_large_to_send_whole_gets_a_note(trigger: dict[str, Any]) -> None:
    event = put(trigger, "incoming/big.parquet", b"PAR1" + b"\0" * 16 + b"PAR1")
    event["Records"][0]["s3"]["object"]["size"] = 7 * 1024 * 1024  # as S3 would announce a large file
    assert invoke(event)["started"] == []
    note = note_at(trigger, "rejected/big.parquet/refused.json")
    assert "exceeds the 6 MB payload limit" in note["reason"] and "spec" not in note


def test_files_that_are_not_claims_get_no_note(trigger: dict[str, Any]) -> None:
    invoke(put(trigger, "incoming/readme.txt", b"drop claims files here\n"))
    invoke(put(trigger, "incoming/2026/", b""))
    assert versions_under(trigger, "rejected/") == []


class UnwritableNotes:
    """The data bucket refusing the note (say KMS throttles): reads work, writes fail."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def read_bytes(self, uri: str) -> bytes:
        data: bytes = self.inner.read_bytes(uri)
        return data

    def write_json(self, uri: str, document: Mapping[str, Any]) -> None:
        raise RuntimeError("ThrottlingException: slow down")


def test_a_note_that_cannot_be_written_fails_the_invocation_so_lambda_retries(
    trigger: dict[str, Any],
) -> None:
    from shared.adapters.artifacts import S3ArtifactStore
    from shared.ports import TransformJobError

    event = put(trigger, "incoming/retry.csv", (CSV_HEADER + ",claim_id\n").encode())
    handler.use_artifacts(UnwritableNotes(S3ArtifactStore()))  # type: ignore[arg-type]
    with pytest.raises(TransformJobError, match=r"incoming/retry\.csv"):
        invoke(event)
    assert versions_under(trigger, "rejected/") == [] and jobs(trigger) == []

    handler.use_artifacts(None)  # the retry, once S3 answers again
    assert invoke(event)["started"] == []
    assert "repeats columns" in note_at(trigger, "rejected/retry.csv/refused.json")["reason"]
