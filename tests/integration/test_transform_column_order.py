"""A CSV whose columns are not in the spec's order, scored by batch transform (issue 11, point 12).

SageMaker cuts the file at line ends into mini-batches (SplitType Line) and only the first one
carries the header. The trigger reads the header and passes the order to the job; the container
reads every mini-batch in that order. Here the trigger runs against moto, the job's environment is
taken from the job moto recorded, and the mini-batches go to the model server's ``/invocations`` as
SageMaker would send them: the scores must be those of the same claims in the spec's order.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest
from starlette.testclient import TestClient

from lambdas.batch_trigger import handler
from sagemaker_jobs.inference.model_server import create_model_server
from shared.batch_jobs import CSV_COLUMNS_ENV, REJECTED_URI_ENV
from shared.feature_spec import claims_spec
from shared.ml.batch_scoring import spec_csv_columns
from shared.ml.synthetic import generate_claims

# The trigger's moto account (the fixture ``aws``, which pytest finds by this import) and helpers.
from tests.integration.test_batch_trigger import BUCKET, REGION, aws, invoke, jobs, put  # noqa: F401

SPEC_ORDER = spec_csv_columns(claims_spec())
ROWS = 23
LINES_PER_MINI_BATCH = 5  # small, so the file makes several mini-batches


def shuffled_columns() -> list[str]:
    columns = list(SPEC_ORDER)
    random.Random(12).shuffle(columns)
    assert columns != SPEC_ORDER and columns[0] != SPEC_ORDER[0]
    return columns


def claims_frame() -> pd.DataFrame:
    frame = generate_claims(ROWS, seed=11).frame[SPEC_ORDER].astype(object)
    frame.loc[4, "claim_amount"] = -5  # one bad row: rejected with its reason, wherever it lands
    return frame


def as_csv(frame: pd.DataFrame, columns: list[str], *, header: bool) -> bytes:
    return frame[columns].to_csv(index=False, header=header, date_format="%Y-%m-%d").encode()


def mini_batches(body: bytes, lines: int = LINES_PER_MINI_BATCH) -> list[bytes]:
    """The file cut as SageMaker's SplitType Line cuts it: whole lines, the header in the first batch only."""
    all_lines = body.splitlines(keepends=True)
    return [b"".join(all_lines[i : i + lines]) for i in range(0, len(all_lines), lines)]


def transform(client: TestClient, batches: list[bytes], accept: str = "text/csv") -> list[list[str]]:
    """Each mini-batch through /invocations; the output file's rows, as AssembleWith Line joins them."""
    out = b""
    for batch in batches:
        answer = client.post(
            "/invocations", content=batch, headers={"Content-Type": "text/csv", "Accept": accept}
        )
        assert answer.status_code == 200, answer.text
        out += answer.content
    return list(csv.reader(io.StringIO(out.decode())))


@pytest.fixture(scope="module")
def server(model_dir: Path) -> TestClient:
    return TestClient(create_model_server(model_dir, monitoring=None))


def moto_clients() -> dict[str, Any]:
    """Clients of the moto account the ``aws`` fixture set up (the helpers take them in a dict)."""
    return {name: boto3.client(name, region_name=REGION) for name in ("s3", "sagemaker")}


@pytest.mark.slow
@pytest.mark.usefixtures("aws")
def test_a_shuffled_csv_in_mini_batches_scores_as_its_spec_order_twin(
    server: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = moto_clients()
    frame, columns = claims_frame(), shuffled_columns()
    key = "incoming/2026/12/shuffled.csv"
    [name] = invoke(put(account, key, as_csv(frame, columns, header=True)))["started"]
    environment = account["sagemaker"].describe_transform_job(TransformJobName=name)["Environment"]
    assert json.loads(environment[CSV_COLUMNS_ENV]) == columns

    # The twin: the same claims, header-less in the spec's order, in one body (what worked before).
    monkeypatch.setenv(REJECTED_URI_ENV, environment[REJECTED_URI_ENV])
    monkeypatch.delenv(CSV_COLUMNS_ENV, raising=False)
    expected = transform(server, [as_csv(frame, SPEC_ORDER, header=False)])

    # The job: its own environment, the file in mini-batches.
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    batches = mini_batches(as_csv(frame, columns, header=True))
    assert len(batches) >= 4 and batches[0].startswith(",".join(columns).encode())
    got = transform(server, batches)

    header, rows = got[0], got[1:]
    assert header[0] == "claim_id" and header[-1] == "error"  # the header line became the output's header
    assert len(rows) == ROWS and rows == expected
    assert [r[0] for r in rows] == list(frame["claim_id"])
    assert sum(1 for r in rows if r[-1]) == 1 and "claim_amount" in rows[4][-1]
    assert sum(1 for r in rows if r[2]) == ROWS - 1  # every other claim has a score
    # The bad row's reason went to the job's rejected prefix too (moto's S3 here).
    listed = account["s3"].list_objects_v2(Bucket=BUCKET, Prefix="rejected/2026/12/shuffled.csv/")
    assert [o["Key"] for o in listed.get("Contents", [])], "a rejected part was written"

    # Without the columns (the job before issue 11), the later mini-batches were read in the spec's order.
    monkeypatch.delenv(CSV_COLUMNS_ENV)
    before = transform(server, batches)[1:]
    assert before[: LINES_PER_MINI_BATCH - 1] == expected[: LINES_PER_MINI_BATCH - 1]
    assert before[LINES_PER_MINI_BATCH - 1 :] != expected[LINES_PER_MINI_BATCH - 1 :]


@pytest.mark.slow
def test_json_lines_output_and_a_header_only_first_mini_batch(
    server: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    frame, columns = claims_frame(), shuffled_columns()
    monkeypatch.setenv(REJECTED_URI_ENV, str(tmp_path / "rejected"))
    monkeypatch.delenv(CSV_COLUMNS_ENV, raising=False)
    expected = transform(server, [as_csv(frame, SPEC_ORDER, header=False)], accept="application/jsonlines")

    monkeypatch.setenv(CSV_COLUMNS_ENV, json.dumps(columns))
    body = as_csv(frame, columns, header=True)
    batches = mini_batches(body, lines=1)  # the header alone in the first mini-batch
    assert transform(server, batches[:1], accept="application/jsonlines") == []
    got = transform(server, batches, accept="application/jsonlines")
    assert got == expected and len(got) == ROWS


@pytest.mark.usefixtures("aws")
def test_a_csv_missing_a_required_column_starts_no_job_and_says_why(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    account = moto_clients()
    stream_handler = handler.logger.registered_handler  # as test_batch_trigger: capture the JSON logs
    assert isinstance(stream_handler, logging.StreamHandler)
    monkeypatch.setattr(stream_handler, "stream", sys.stdout)
    counted: list[str] = []
    monkeypatch.setattr(handler.metrics, "add_metric", lambda name, **_: counted.append(name))
    frame = claims_frame()
    columns = [c for c in shuffled_columns() if c != "claim_history"]

    summary = invoke(put(account, "incoming/2026/12/no-history.csv", as_csv(frame, columns, header=True)))

    assert jobs(account) == []
    uri = f"s3://{BUCKET}/incoming/2026/12/no-history.csv"
    assert summary == {"started": [], "duplicates": [], "ignored": [uri]}
    assert counted == ["BatchFilesRefused"]
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [refused] = [line for line in logged if str(line.get("message", "")).startswith("refused ")]
    assert refused["level"] == "WARNING"
    assert refused["reason"] == "not a claims file: the header lacks required columns: claim_history"
    assert refused["object"] == uri
