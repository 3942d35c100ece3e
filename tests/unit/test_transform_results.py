"""A completed transform job's output into the claims lake (shared/transform_results.py), with fake
objects and the local lake: the rows the drop folder would write, in the file's own partition."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.adapters.lake import LocalLake
from shared.batch_jobs import CSV_COLUMNS_ENV, REJECTED_URI_ENV
from shared.lake import LakeError
from shared.ml.batch_scoring import render_line_results
from shared.transform_results import (
    TransformJobRecord,
    TransformResultsError,
    mirror_transform_job,
    plain_cell,
)

BUCKET: Final = "claims-risk-data"
SOURCE: Final = f"s3://{BUCKET}/incoming/2026/12/claims.csv"
OUTPUT: Final = f"s3://{BUCKET}/scored/2026/12/claims.csv/"
ENDED: Final = datetime(2026, 12, 1, 9, 26, 13, tzinfo=UTC)


class FakeFiles:
    """Objects by URI (and version), as S3 would hand them to the job."""

    def __init__(self, objects: dict[str, bytes], versions: dict[tuple[str, str], bytes]) -> None:
        self.objects, self.versions = objects, versions
        self.asked: list[tuple[str, str | None]] = []

    def keys_under(self, prefix_uri: str) -> list[str]:
        return [uri for uri in self.objects if uri.startswith(prefix_uri)]

    def download(self, uri: str, version_id: str | None, target: Path) -> None:
        self.asked.append((uri, version_id))
        body = self.versions.get((uri, version_id)) if version_id else self.objects.get(uri)
        if body is None:
            raise FileNotFoundError(f"{uri} is gone")
        target.write_bytes(body)


def scored(claim_id: str, score: float) -> dict[str, Any]:
    return {
        "claim_id": claim_id,
        "risk_level": "high" if score >= 0.5 else "low",
        "risk_score": score,
        "confidence": abs(score - 0.5) * 2,
        "model_version": "v7",
        "risk_factors": [{"feature": "claim_amount", "impact": 0.25}],
        "threshold": 0.5,
    }


def rejected(claim_id: str, reason: str) -> dict[str, Any]:
    return {"claim_id": claim_id, "error": reason}


def out_file(batches: Sequence[Sequence[dict[str, Any]]], *, as_csv: bool) -> bytes:
    """The .out as SageMaker assembles it: each mini-batch's answer, a line between them."""
    return b"\n".join(render_line_results(batch, as_csv=as_csv) for batch in batches)


def job(content_type: str = "text/csv", accept: str = "text/csv", **fields: Any) -> TransformJobRecord:
    values: dict[str, Any] = {
        "name": "claims-batch-claims-0a1b2c3d4e5f",
        "status": "Completed",
        "input_uri": SOURCE,
        "output_uri": OUTPUT,
        "content_type": content_type,
        "accept": accept,
        "environment": {REJECTED_URI_ENV: f"s3://{BUCKET}/rejected/2026/12/claims.csv/"},
        "tags": {"source-version": "v1"},
        "ended_at": ENDED,
    }
    return TransformJobRecord(**{**values, **fields})


CSV_INPUT: Final = b"claim_id,claim_amount\nA,100\nB,-5\n\n-C1,300\r\nD,400\n"
CSV_RESULTS: Final = [
    [{"header": True}, scored("A", 0.9), rejected("B", "claim_amount: must be at least 0")],
    [scored("-C1", 0.2), scored("D", 0.6)],  # -C1 is made inert in the CSV output ('-C1)
]


def mirror(
    files: FakeFiles, lake: LocalLake, tmp_path: Path, record: TransformJobRecord | None = None
) -> Any:
    work = tmp_path / f"work-{len(list(tmp_path.iterdir()))}"
    work.mkdir()
    return mirror_transform_job(record or csv_job(), files, lake, work, incoming_prefix="incoming/")


def csv_job() -> TransformJobRecord:
    environment = {REJECTED_URI_ENV: "s3://x/rejected/", CSV_COLUMNS_ENV: '["claim_id","claim_amount"]'}
    return job(environment=environment)


def csv_files() -> FakeFiles:
    return FakeFiles(
        {f"{OUTPUT}claims.csv.out": out_file(CSV_RESULTS, as_csv=True), SOURCE: b"a newer upload"},
        {(SOURCE, "v1"): CSV_INPUT},
    )


def test_a_csv_transform_lands_as_the_drop_folder_writes_it(tmp_path: Path) -> None:
    lake, files = LocalLake(tmp_path / "lake"), csv_files()
    summary = mirror(files, lake, tmp_path)
    batch_id = hashlib.sha256(CSV_INPUT).hexdigest()[:32]  # the drop folder's partition for these bytes
    assert summary.as_dict() == {
        "transform_job": "claims-batch-claims-0a1b2c3d4e5f",
        "source": SOURCE,
        "version_id": "v1",
        "source_file": "2026/12/claims.csv",
        "batch_id": batch_id,
        "rows": 4,
        "batch_scored": 3,
        "rejected_rows": 1,
    }
    assert (SOURCE, "v1") in files.asked  # the version scored, not the newer upload
    rows = lake.query(
        "SELECT row_number, claim_id, risk_level, risk_score, model_version, risk_factors, source_file, "
        "scored_at, batch_id FROM batch_scored ORDER BY row_number"
    )
    assert rows["row_number"].tolist() == [1, 3, 4]  # the header and the blank line are no rows
    assert rows["claim_id"].tolist() == ["A", "-C1", "D"]  # the spreadsheet quote is not the sender's
    assert rows["risk_score"].tolist() == [0.9, 0.2, 0.6] and set(rows["model_version"]) == {"v7"}
    assert json.loads(rows["risk_factors"][0]) == [{"feature": "claim_amount", "impact": 0.25}]
    assert set(rows["source_file"]) == {"2026/12/claims.csv"} and set(rows["batch_id"]) == {batch_id}
    assert set(rows["scored_at"]) == {ENDED.replace(tzinfo=None)}  # when SageMaker scored it
    [refused] = lake.query("SELECT * FROM rejected_rows").to_dict("records")
    assert (refused["row_number"], refused["claim_id"], refused["raw"]) == (2, "B", "B,-5")
    assert refused["reason"] == "claim_amount: must be at least 0"
    assert (refused["stage"], refused["batch_id"]) == ("batch", batch_id)


def test_running_it_again_replaces_the_partition(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    mirror(csv_files(), lake, tmp_path)
    mirror(csv_files(), lake, tmp_path)
    counts = lake.query("SELECT count(*) AS n FROM batch_scored UNION ALL SELECT count(*) FROM rejected_rows")
    assert counts["n"].tolist() == [3, 1]


def test_output_that_does_not_pair_with_the_input_changes_nothing(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    mirror(csv_files(), lake, tmp_path)
    short = csv_files()
    short.objects[f"{OUTPUT}claims.csv.out"] = out_file(CSV_RESULTS[:1], as_csv=True)
    with pytest.raises(TransformResultsError, match="4 input rows, 2 results"):
        mirror(short, lake, tmp_path)
    assert len(lake.query("SELECT * FROM batch_scored")) == 3  # the earlier, whole copy stays


def test_the_pairs_are_counted_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []
    monkeypatch.setattr(
        "shared.adapters.lake.LocalPartitionWriter.write", lambda _, frame: written.append(len(frame))
    )
    short = csv_files()
    short.objects[f"{OUTPUT}claims.csv.out"] = out_file([CSV_RESULTS[0], CSV_RESULTS[1][:1]], as_csv=True)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(TransformResultsError, match="4 input rows, 3 results"):
        # One row a chunk: without the count first, the first rows would be written before the end.
        mirror_transform_job(
            csv_job(), short, LocalLake(tmp_path / "lake"), work, incoming_prefix="incoming/", chunk_rows=1
        )
    assert written == []


def test_a_lake_that_fails_is_an_error_of_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = LocalLake(tmp_path / "lake")

    def full(*_: object) -> None:
        raise LakeError("the lake's disk is full")

    monkeypatch.setattr("shared.adapters.lake.LocalPartitionWriter.commit", full)
    with pytest.raises(LakeError, match="disk is full"):
        mirror(csv_files(), lake, tmp_path)
    assert lake.partitions("batch_scored") == []


def test_json_lines_pair_line_by_line(tmp_path: Path) -> None:
    lines = [{"claim_id": "J1", "claim_amount": 5}, {"claim_id": "J2", "claim_amount": -1}]
    body = b"\n".join(json.dumps(r).encode() for r in lines) + b"\n\n"
    results = [[scored("J1", 0.7), rejected("J2", "claim_amount: must be at least 0")]]
    files = FakeFiles(
        {f"{OUTPUT}claims.csv.out": out_file(results, as_csv=False)},
        {(SOURCE, "v1"): body},
    )
    lake = LocalLake(tmp_path / "lake")
    summary = mirror(files, lake, tmp_path, job("application/jsonlines", "application/jsonlines"))
    assert (summary.batch_scored, summary.rejected_rows) == (1, 1)
    [refused] = lake.query("SELECT row_number, raw FROM rejected_rows").to_dict("records")
    assert refused == {"row_number": 2, "raw": json.dumps(lines[1])}
    [factors] = lake.query("SELECT risk_factors FROM batch_scored")["risk_factors"]
    assert json.loads(factors) == [{"feature": "claim_amount", "impact": 0.25}]


def test_a_parquet_file_pairs_row_by_row(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"claim_id": ["P1", "P2", "P3"], "claim_amount": [1.5, -2.0, None]}), buffer)
    results = [[scored("P1", 0.1), rejected("P2", "claim_amount: must be at least 0"), scored("P3", 0.3)]]
    files = FakeFiles(
        {f"{OUTPUT}claims.csv.out": out_file(results, as_csv=False)},
        {(SOURCE, "v1"): buffer.getvalue()},
    )
    lake = LocalLake(tmp_path / "lake")
    mirror(files, lake, tmp_path, job("application/x-parquet", "application/jsonlines"))
    [refused] = lake.query("SELECT row_number, raw FROM rejected_rows").to_dict("records")
    # As the drop folder shows a rejected Parquet row: its non-missing values (numbers as their text).
    assert refused["row_number"] == 2 and json.loads(refused["raw"]) == {
        "claim_id": "P2",
        "claim_amount": "-2.0",
    }


def test_the_output_found_is_the_dropped_files_own(tmp_path: Path) -> None:
    files = csv_files()
    # An S3Prefix input of incoming/…/claims.csv also matches claims.csv.bak: its .out is not this file's.
    files.objects[f"{OUTPUT}claims.csv.bak.out"] = b"not ours\n"
    assert mirror(files, LocalLake(tmp_path / "lake"), tmp_path).rows == 4
    files.objects.pop(f"{OUTPUT}claims.csv.out")
    with pytest.raises(TransformResultsError, match=r"no claims\.csv\.out under"):
        mirror(files, LocalLake(tmp_path / "lake"), tmp_path)


def test_a_job_not_completed_or_a_version_gone_is_refused(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    with pytest.raises(TransformResultsError, match="is Failed"):
        mirror(csv_files(), lake, tmp_path, job(status="Failed"))
    with pytest.raises(TransformResultsError, match="is gone"):
        mirror(csv_files(), lake, tmp_path, job(tags={"source-version": "v0"}))


def test_without_a_version_the_current_object_is_read() -> None:
    for tag in ("none", "sequencer-0065A1B2C3D4E5F6"):
        assert job(tags={"source-version": tag}).source_version is None
    assert job(tags={}).source_version is None and job().source_version == "v1"


@pytest.mark.parametrize(
    ("cell", "plain"),
    [("'-C1", "-C1"), ("'=SUM(A1)", "=SUM(A1)"), ("'-12", "'-12"), ("'quoted", "'quoted"), ("A", "A")],
)
def test_only_the_quote_the_output_added_is_taken_off(cell: str, plain: str) -> None:
    assert plain_cell(cell) == plain
