"""A dropped file's scored and rejected rows reach the claims lake, once, in the file's own partition;
the lake failing never fails the file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from local.dropbox import DropFolderWatcher, WatchSettings
from shared.adapters.lake import LocalLake
from shared.lake import LakeError
from shared.ml.synthetic import generate_claims, write_claims

FAST = WatchSettings(poll_interval_s=0.05, settle_s=0.3, duplicates="score")


def drop(root: Path, name: str, content: bytes) -> None:
    (root / "incoming").mkdir(parents=True, exist_ok=True)
    staged = root / f".{name}.part"
    staged.write_bytes(content)
    staged.rename(root / "incoming" / name)


def watch_once(root: Path, model_dir: Path, lake: LocalLake) -> list[dict[str, object]]:
    with DropFolderWatcher(root, lambda: model_dir, FAST, lake=lake) as watcher:
        return [r.summary or {} for r in watcher.run(until_idle=True)]


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """500 generated claims as CSV, the 7th with an amount no claim has."""
    path = write_claims(generate_claims(500, seed=8), tmp_path_factory.mktemp("claims") / "claims.csv")
    header, *lines = path.read_bytes().splitlines()
    cells = lines[6].split(b",")
    cells[header.split(b",").index(b"claim_amount")] = b"-40"
    lines[6] = b",".join(cells)
    return b"\n".join([header, *lines]) + b"\n"


def test_a_dropped_file_lands_in_the_lake_once(model_dir: Path, tmp_path: Path, content: bytes) -> None:
    root, lake = tmp_path / "dropbox", LocalLake(tmp_path / "lake")
    drop(root, "march.csv", content)
    [summary] = watch_once(root, model_dir, lake)
    batch_id = hashlib.sha256(content).hexdigest()[:32]
    assert summary["lake"] == {"batch_id": batch_id, "batch_scored": 499, "rejected_rows": 1}

    scored = lake.query("SELECT claim_id, risk_level, risk_factors, source_file, batch_id FROM batch_scored")
    files = sorted((root / "scored").iterdir())
    assert (
        len(scored) == 499
        and set(scored["batch_id"]) == {batch_id}
        and set(scored["source_file"]) == {"march.csv"}
    )
    on_disk = files[0].read_text().splitlines()
    assert len(on_disk) == 500  # the header and the same 499 rows
    assert all(isinstance(json.loads(f), list) for f in scored["risk_factors"].head(20))
    [refused] = lake.query("SELECT row_number, reason FROM rejected_rows WHERE stage = 'batch'").to_dict(
        "records"
    )
    assert refused["row_number"] == 7 and "claim_amount" in refused["reason"]

    # The same contents dropped again under another name replace the partition: one copy.
    drop(root, "march-again.csv", content)
    watch_once(root, model_dir, lake)
    again = lake.query("SELECT count(*) AS n, count(DISTINCT source_file) AS files FROM batch_scored")
    assert again.to_dict("records") == [{"n": 499, "files": 1}]


def test_the_lake_failing_does_not_fail_the_file(
    model_dir: Path, tmp_path: Path, content: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, lake = tmp_path / "dropbox", LocalLake(tmp_path / "lake")

    def broken(*_: object) -> None:
        raise LakeError("the lake's disk is full")

    monkeypatch.setattr("shared.adapters.lake.LocalPartitionWriter.commit", broken)
    drop(root, "april.csv", content)
    [summary] = watch_once(root, model_dir, lake)
    assert summary["scored"] == 499 and summary["lake"] == {"error": "the lake's disk is full"}
    assert len((root / "scored" / "april.csv").read_text().splitlines()) == 500
    assert lake.partitions("batch_scored") == []
