"""The sharded drift job, offline, as SageMaker runs it: the hour's capture objects dealt among three
map instances as ShardedByS3Key deals them (one instance gets none), each instance told its host by
its own resourceconfig.json, all writing under one output prefix; then the reduce over the partials.
Its report, violations, metrics and lake rows are the one-instance job's over the same hour."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pytest

from benchmarks.bench_monitoring import ENDPOINT, claim_records, write_baseline_artifact, write_capture
from shared.adapters.lake import LocalLake
from shared.drift_jobs import PARTIALS_VARIABLE, PHASE_VARIABLE
from shared.ml.synthetic import generate_claims

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
START: Final = datetime(2026, 12, 1, 8, tzinfo=UTC)
HOSTS: Final = ("algo-1", "algo-2", "algo-3")
OBJECTS: Final = 6  # SageMaker writes an hour of capture as several objects


def run_job(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMS_RISK_")}
    base.pop("publish_cloudwatch_metrics", None)
    done = subprocess.run(
        [sys.executable, "-m", "sagemaker_jobs.monitoring.drift", *args],
        env=base | {"PYTHONPATH": str(REPO_ROOT)} | env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def split_into_objects(hour_file: Path, parts: int) -> list[Path]:
    """The hour's lines as ``parts`` objects, with two lines no job can read."""
    lines = hour_file.read_bytes().splitlines(keepends=True)
    lines.insert(len(lines) // 2, b"not a capture line\n")
    lines.append(b'{"captureData": {"endpointInput": {"data": "{}"}}, "eventMetadata": {}}\n')
    hour_file.unlink()
    size = math.ceil(len(lines) / parts)
    objects = []
    for i in range(parts):
        path = hour_file.with_name(f"{i:02d}-capture.jsonl")
        path.write_bytes(b"".join(lines[i * size : (i + 1) * size]))
        objects.append(path)
    return objects


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("map-reduce")
    model = write_baseline_artifact(root / "model", generate_claims(20_000, seed=1))
    capture = root / "capture"
    claims = generate_claims(2_400, seed=5, drift=1.0)
    records = claim_records(claims.frame)
    for i, record in enumerate(records):  # missing values the figures must count the same way
        if i % 9 == 0:
            record.pop("sum_insured", None)
        if i % 13 == 0:
            record["claim_type"] = "pet"
    [hour_file] = write_capture(capture, records, claims.true_probability, start=START, claims_per_request=3)
    objects = split_into_objects(hour_file, OBJECTS)
    outside = generate_claims(300, seed=6)  # the next hour: not this window's
    write_capture(
        capture, claim_records(outside.frame), outside.true_probability, start=START + timedelta(hours=1)
    )
    window = {"start_time": START.isoformat(), "end_time": (START + timedelta(hours=1)).isoformat()}
    common = window | {"CLAIMS_RISK_ENDPOINT": ENDPOINT}

    run_job(
        common
        | {
            "dataset_source": str(capture),
            "output_path": str(root / "whole"),
            "CLAIMS_RISK_MODEL_URI": str(model),
            "CLAIMS_RISK_HOME": str(root / "home-whole"),
            "CLAIMS_RISK_LAKE_ROOT": str(root / "lake-whole"),
        },
        "--run-id",
        "drift-whole",
    )

    # ShardedByS3Key: each instance gets about 1/n of the objects, under the same relative keys.
    dealt = {HOSTS[0]: objects[0::2], HOSTS[1]: objects[1::2], HOSTS[2]: []}
    for host, paths in dealt.items():
        shard = root / "shards" / host
        for path in paths:
            target = shard / path.relative_to(capture)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
        config = root / "config" / host / "resourceconfig.json"
        config.parent.mkdir(parents=True)
        config.write_text(json.dumps({"current_host": host, "hosts": list(HOSTS)}), encoding="utf-8")
        run_job(
            common
            | {
                PHASE_VARIABLE: "map",
                "dataset_source": str(shard),
                "output_path": str(root / "partials"),  # one S3 prefix for every instance
                "CLAIMS_RISK_RESOURCE_CONFIG": str(config),
                "CLAIMS_RISK_MODEL_URI": str(model),
                "CLAIMS_RISK_HOME": str(root / "home-sharded"),
                "CLAIMS_RISK_LAKE_ROOT": str(root / "lake-sharded"),
            }
        )
    assert not (root / "home-sharded").exists(), "a map instance published metrics"
    assert not any((root / "lake-sharded").rglob("*.parquet")), "a map instance wrote the lake"
    assert not (root / "partials" / "constraint_violations.json").exists()

    run_job(
        common
        | {
            PHASE_VARIABLE: "reduce",
            PARTIALS_VARIABLE: str(root / "partials"),
            "output_path": str(root / "sharded"),
            "CLAIMS_RISK_HOME": str(root / "home-sharded"),
            "CLAIMS_RISK_LAKE_ROOT": str(root / "lake-sharded"),
        },  # no model: the partials carry the baseline they were binned against
        "--run-id",
        "drift-sharded",
    )
    return {"root": root}


def flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}[{i}]").items()}
    return {path: value}


def report(root: Path, run: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((root / run / "drift_report.json").read_text(encoding="utf-8"))
    return document


def test_the_reduce_writes_the_one_instance_report_and_violations(runs: dict[str, Path]) -> None:
    root = runs["root"]
    whole, sharded = report(root, "whole"), report(root, "sharded")
    assert whole["claims"] == 2_400  # every claim of the hour, none of the next
    assert whole["alarms"] and whole["drifted_features"]  # drifted traffic: there is something to get right
    got = flat({k: v for k, v in sharded.items() if k != "notes"})
    want = flat({k: v for k, v in whole.items() if k != "notes"})
    assert got.keys() == want.keys()
    for key, expected in want.items():
        if isinstance(expected, float):
            assert got[key] == pytest.approx(expected, rel=1e-12, abs=1e-15), key
        else:
            assert got[key] == expected, key
    violations = (root / "sharded" / "constraint_violations.json").read_text(encoding="utf-8")
    assert violations == (root / "whole" / "constraint_violations.json").read_text(encoding="utf-8")
    assert (root / "sharded" / "report.html").is_file()
    [skipped] = [n.split("; first:")[0] for n in sharded["notes"] if n.startswith("skipped")]
    assert [n.split("; first:")[0] for n in whole["notes"] if n.startswith("skipped")] == [skipped]
    assert "on 3 instances" in sharded["notes"][0]


def metric_lines(path: Path) -> list[tuple[str, float, str]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted(
        (m["name"], round(m["value"], 12), json.dumps(m["dimensions"], sort_keys=True)) for m in lines
    )


def test_the_metrics_are_published_once_by_the_reduce_with_the_same_values(runs: dict[str, Path]) -> None:
    root = runs["root"]
    whole = metric_lines(root / "home-whole" / "monitoring" / "metrics.jsonl")
    assert whole and metric_lines(root / "home-sharded" / "monitoring" / "metrics.jsonl") == whole


def rows(lake: Path, sql: str) -> pd.DataFrame:
    return LocalLake(lake).query(sql).reset_index(drop=True)


def test_the_lake_gets_the_same_rows(runs: dict[str, Path]) -> None:
    root = runs["root"]
    inferences = "SELECT * FROM inferences ORDER BY event_id, position"
    whole, sharded = rows(root / "lake-whole", inferences), rows(root / "lake-sharded", inferences)
    assert len(whole) == 2_400
    pd.testing.assert_frame_equal(sharded, whole)
    figures = "SELECT metric, feature, value, violated, window_start, window_end FROM monitoring_metrics "
    figures += "ORDER BY metric, feature"
    pd.testing.assert_frame_equal(
        rows(root / "lake-sharded", figures),
        rows(root / "lake-whole", figures),
        check_exact=False,
        rtol=1e-12,
    )


def test_each_map_instance_wrote_only_its_own_partial(runs: dict[str, Path]) -> None:
    partials = runs["root"] / "partials"
    assert sorted(p.relative_to(partials).as_posix() for p in partials.rglob("partial.json")) == [
        f"{h}/partial.json" for h in HOSTS
    ]
    empty = json.loads((partials / "algo-3" / "partial.json").read_text(encoding="utf-8"))
    assert empty["state"]["claims"] == 0 and empty["lake_hours"] == []


def test_a_reduce_missing_a_shard_fails_and_says_which(runs: dict[str, Path], tmp_path: Path) -> None:
    root = runs["root"]
    for host in HOSTS[:2]:
        target = tmp_path / "partials" / host / "partial.json"
        target.parent.mkdir(parents=True)
        target.write_bytes((root / "partials" / host / "partial.json").read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMS_RISK_")}
    env.update(
        {
            PHASE_VARIABLE: "reduce",
            PARTIALS_VARIABLE: str(tmp_path / "partials"),
            "output_path": str(tmp_path / "out"),
            "start_time": START.isoformat(),
            "end_time": (START + timedelta(hours=1)).isoformat(),
            "CLAIMS_RISK_HOME": str(tmp_path / "home"),
            "PYTHONPATH": str(REPO_ROOT),
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "sagemaker_jobs.monitoring.drift"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "the partials of ['algo-3'] are missing" in done.stderr
    assert not (tmp_path / "out" / "constraint_violations.json").exists()
    assert not (tmp_path / "home").exists()
