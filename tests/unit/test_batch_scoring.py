"""Scoring a claims file: every row ends scored or rejected with its reason, in every format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from sagemaker_jobs.inference import inference
from shared.batch_jobs import REJECTED_URI_ENV
from shared.feature_spec import claims_spec
from shared.ml.batch_scoring import (
    BatchFileError,
    FileOutputs,
    csv_chunk,
    csv_header,
    jsonl_chunk,
    score_file,
)
from shared.ml.model import RiskModel
from shared.payloads import PayloadError
from tests.factories import minimal_claim

COLUMNS = list(minimal_claim())


def csv_line(claim: dict[str, Any], columns: list[str] = COLUMNS) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([claim.get(c, "") for c in columns])
    return out.getvalue()


def claim(number: int, **changes: Any) -> dict[str, Any]:
    return minimal_claim(**{"claim_id": f"CLM-{number}", "claim_amount": 1000 + 10 * number, **changes})


# ---------------------------------------------------------------------------------------------
# Reading, no model needed.


def test_each_unreadable_csv_line_is_rejected_alone_with_its_reason() -> None:
    header = ",".join(COLUMNS)
    good = csv_line(claim(1))
    lines = [
        good.encode(),
        csv_line(claim(2)).encode() + b",surplus",  # an extra column
        b'"' + csv_line(claim(3)).encode(),  # an unclosed quote
        csv_line(claim(4)).replace("CLM-4", "CLM-\xe9").encode("latin-1"),  # not UTF-8
        csv_line(claim(5)).encode(),
    ]
    columns, had_header = csv_header(header.encode(), claims_spec())
    assert had_header and columns == COLUMNS
    chunk = csv_chunk(lines, columns, first_row=1, id_column="claim_id")
    assert len(chunk) == 5
    reasons = {position + 1: reason for position, (_, reason) in chunk.unreadable.items()}
    assert set(reasons) == {2, 3, 4}, "the lines after a broken one are read normally"
    assert "extra column" in reasons[2]
    assert "quoting" in reasons[3]
    assert "not UTF-8" in reasons[4]
    assert chunk.frame.loc[4, "claim_id"] == "CLM-5"
    assert chunk.salvaged_ids[1] == "CLM-2", "the rejection still names the claim where it can"


def test_a_header_without_a_required_column_fails_the_file_with_the_column_named() -> None:
    header = ",".join(c for c in COLUMNS if c != "claim_amount")
    with pytest.raises(BatchFileError, match="claim_amount"):
        csv_header(header.encode(), claims_spec())


def test_a_csv_without_header_is_read_in_the_spec_column_order() -> None:
    spec = claims_spec()
    columns, had_header = csv_header(csv_line(claim(1)).encode(), spec)
    assert not had_header
    assert columns[0] == "claim_id"


def test_json_lines_that_are_not_json_objects_are_rejected_alone() -> None:
    lines = [
        orjson.dumps(claim(1)),
        b"{not json",
        b"[1, 2]",
        b'{"claim_id": "CLM-\xff"}',
        orjson.dumps(claim(5)),
    ]
    chunk = jsonl_chunk(lines, first_row=1, spec=claims_spec())
    rules = {position + 1: rule for position, (rule, _) in chunk.unreadable.items()}
    assert rules == {2: "not_json", 3: "not_an_object", 4: "not_utf8"}


# ---------------------------------------------------------------------------------------------
# Scoring, with the session's trained model.


@pytest.fixture(scope="module")
def model(model_dir: Path) -> RiskModel:
    return RiskModel.load(model_dir)


def write_csv(path: Path, lines: list[bytes], columns: list[str] = COLUMNS) -> Path:
    path.write_bytes(b"\n".join([",".join(columns).encode(), *lines]) + b"\n")
    return path


def read_scored_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"claim_id": str})


def test_a_csv_file_ends_scored_or_rejected_row_for_row(model: RiskModel, tmp_path: Path) -> None:
    lines = [csv_line(claim(i)).encode() for i in range(1, 11)]
    lines[2] = csv_line(claim(3, claim_amount="lots")).encode()  # wrong type
    lines[5] = csv_line(claim(6, claim_type="")).encode()  # a required field missing
    lines[7] = lines[7] + b",surplus"
    source = write_csv(tmp_path / "claims.csv", lines)
    outputs = FileOutputs(tmp_path / "scored.csv", tmp_path / "rejected.csv")

    summary = score_file(model, source, outputs, chunk_rows=4)

    scored, rejected = read_scored_csv(outputs.scored), pd.read_csv(outputs.rejected, dtype=str)
    assert (summary["rows_in"], summary["scored"], summary["rejected"]) == (10, 7, 3)
    assert rejected["row_number"].astype(int).tolist() == [3, 6, 8]
    assert rejected["claim_id"].tolist() == ["CLM-3", "CLM-6", "CLM-8"]
    reasons = rejected["reason"].tolist()
    assert "claim_amount" in reasons[0] and "not a number" in reasons[0]
    assert "claim_type: missing" in reasons[1]
    assert "extra column" in reasons[2]
    assert rejected["raw"].iloc[2].endswith(",surplus"), "the raw line is kept to fix and resend"
    assert scored["claim_id"].tolist() == [f"CLM-{i}" for i in (1, 2, 4, 5, 7, 9, 10)]
    assert summary["rejections_by_rule"]["read:field_count"] == 1
    assert sum(summary["score_distribution"]["count_by_risk_level"].values()) == 7


def test_the_file_path_scores_and_explains_a_claim_as_the_endpoint_does(
    model: RiskModel, tmp_path: Path
) -> None:
    claims = [
        claim(i, claim_history=i % 4, description="claimant requests cash settlement") for i in range(1, 6)
    ]
    columns = [*COLUMNS, "description"]
    source = write_csv(tmp_path / "claims.csv", [csv_line(c, columns).encode() for c in claims], columns)
    outputs = FileOutputs(tmp_path / "scored.csv", tmp_path / "rejected.csv")
    score_file(model, source, outputs)

    endpoint = model.predict_records(claims)
    scored = read_scored_csv(outputs.scored)
    for row, expected in zip(scored.to_dict("records"), endpoint, strict=True):
        assert row["claim_id"] == expected["claim_id"]
        assert row["risk_level"] == expected["risk_level"]
        assert row["risk_score"] == pytest.approx(expected["risk_score"], abs=1e-6)
        assert json.loads(row["risk_factors"]) == expected["risk_factors"]


def test_a_claim_id_seen_in_an_earlier_chunk_is_rejected_as_a_duplicate(
    model: RiskModel, tmp_path: Path
) -> None:
    lines = [csv_line(claim(i)).encode() for i in (1, 2, 3, 4, 1)]
    source = write_csv(tmp_path / "claims.csv", lines)
    outputs = FileOutputs(tmp_path / "scored.csv", tmp_path / "rejected.csv")
    summary = score_file(model, source, outputs, chunk_rows=2)
    rejected = pd.read_csv(outputs.rejected, dtype=str)
    assert summary["scored"] == 4
    assert rejected["reason"].tolist() == ["claim_id: duplicate of row 1"]
    assert read_scored_csv(outputs.scored)["claim_id"].is_unique


def test_json_lines_and_parquet_come_back_in_their_own_format(model: RiskModel, tmp_path: Path) -> None:
    claims = [claim(i) for i in range(1, 5)]
    jsonl = tmp_path / "claims.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(c) + b"\n" for c in claims[:3]) + b'{"claim_id": "CLM-9"}\n')
    out = FileOutputs(tmp_path / "scored.jsonl", tmp_path / "rejected.jsonl")
    assert score_file(model, jsonl, out)["scored"] == 3
    lines = [json.loads(line) for line in out.scored.read_text().splitlines()]
    assert [p["claim_id"] for p in lines] == ["CLM-1", "CLM-2", "CLM-3"]
    assert all(p["risk_factors"] for p in lines), "JSON Lines keep the factors as objects"
    [rejection] = [json.loads(line) for line in out.rejected.read_text().splitlines()]
    assert rejection["row_number"] == 4 and "claim_amount: missing" in rejection["reason"]

    parquet = tmp_path / "claims.parquet"
    pd.DataFrame(claims).to_parquet(parquet, index=False)
    out = FileOutputs(tmp_path / "scored.parquet", tmp_path / "rejected.parquet")
    assert score_file(model, parquet, out, explain=False)["scored"] == 4
    scored = pd.read_parquet(out.scored)
    assert scored["claim_id"].tolist() == [c["claim_id"] for c in claims]
    assert scored["risk_factors"].tolist() == ["[]"] * 4, "without explanations the factors are empty"


def test_a_file_that_cannot_be_read_at_all_fails_with_a_clear_reason(
    model: RiskModel, tmp_path: Path
) -> None:
    broken = tmp_path / "claims.parquet"
    broken.write_bytes(b"not parquet at all")
    outputs = FileOutputs(tmp_path / "s.parquet", tmp_path / "r.parquet")
    with pytest.raises(BatchFileError, match="not a readable Parquet file"):
        score_file(model, broken, outputs)
    with pytest.raises(BatchFileError, match="must end with"):
        score_file(model, tmp_path / "claims.txt", outputs)


# ---------------------------------------------------------------------------------------------
# SageMaker batch transform: one output line per input line, through the inference script.


def test_batch_transform_gives_one_line_per_input_line_even_for_bad_rows(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = inference.model_fn(str(model_dir))
    columns = [c.name for c in model.spec.columns]  # batch transform's CSV: no header, the spec's order
    lines = [
        csv_line(claim(1), columns),
        csv_line(claim(2), columns) + ",surplus",
        csv_line(claim(3), columns),
    ]
    body = ("\n".join(lines) + "\n").encode()

    # A real-time request is all or nothing, as before.
    with pytest.raises(PayloadError):
        inference.handle(model, body, "text/csv", "application/jsonlines")

    # A local folder stands for the job's rejected prefix (s3://bucket/rejected/claims.csv/ in AWS).
    rejected_prefix = tmp_path / "rejected" / "claims.csv"
    monkeypatch.setenv(REJECTED_URI_ENV, str(rejected_prefix))
    out, _ = inference.handle(model, body, "text/csv", "application/jsonlines")
    results = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["claim_id"] for r in results] == ["CLM-1", "CLM-2", "CLM-3"]
    assert "extra column" in results[1]["error"]
    assert results[0]["risk_factors"] and "error" not in results[0]
    [part] = rejected_prefix.glob("part-*.jsonl")
    [rejection] = [json.loads(line) for line in part.read_text().splitlines()]
    assert rejection["line_in_batch"] == 2 and rejection["claim_id"] == "CLM-2"
    assert "extra column" in rejection["reason"]

    out, _ = inference.handle(model, body, "text/csv", "text/csv")
    rows = list(csv.reader(io.StringIO(out.decode())))
    assert len(rows) == 3 and rows[1][-1] and not rows[0][-1], "CSV output: an error column"

    parquet = io.BytesIO()
    pd.DataFrame([claim(1), claim(2, customer_age=7)]).to_parquet(parquet, index=False)
    out, _ = inference.handle(model, parquet.getvalue(), "application/x-parquet", "application/jsonlines")
    results = [json.loads(line) for line in out.decode().splitlines()]
    assert "risk_score" in results[0] and "customer_age" in results[1]["error"]
