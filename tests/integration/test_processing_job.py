"""The processing job under SageMaker's processing contract: nothing is lost, every rejection explained."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from shared.metric_lines import parse_metrics
from shared.ml.synthetic import generate_claims, write_claims

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_job(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagemaker_jobs.processing.validate", "--base-dir", str(base), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_rows_are_split_or_rejected_with_reasons(tmp_path: Path) -> None:
    raw = tmp_path / "input" / "raw"
    write_claims(generate_claims(3_000, seed=12), raw / "claims.csv")
    with (raw / "claims.csv").open("a") as handle:  # corrupt rows a claims system might send
        handle.write("BAD-1,-5,auto,35,2,1,urban,,,,,,,,,,,,,0\n")
        handle.write("BAD-2,1000,auto,500,2,1,urban,,,,,,,,,,,,,1\n")
        handle.write("BAD-3,lots,auto,35,2,1,urban,,,,,,,,,,,,,0\n")
        handle.write(",1000,auto,35,2,1,urban,,,,,,,,,,,,,0\n")
    write_claims(generate_claims(500, seed=13, id_prefix="PQ"), raw / "more.parquet")
    done = run_job(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    out = tmp_path / "output"
    splits = {
        name: pd.read_parquet(out / name / f"{name}.parquet") for name in ("train", "validation", "test")
    }
    rejected = pd.read_csv(out / "rejected" / "rejected.csv")
    assert sum(len(s) for s in splits.values()) + len(rejected) == 3_504
    assert set(rejected["claim_id"].fillna("")) == {"BAD-1", "BAD-2", "BAD-3", ""}
    assert rejected["reason"].str.len().gt(0).all() and set(rejected["source_file"]) == {"claims.csv"}
    assert rejected["row_number"].tolist() == [3_001, 3_002, 3_003, 3_004]
    prevalence = [s["is_high_risk"].mean() for s in splits.values()]
    assert max(prevalence) - min(prevalence) < 0.02  # stratified
    ids = pd.concat([s["claim_id"] for s in splits.values()])
    assert ids.is_unique

    quality = json.loads((out / "quality" / "data_quality.json").read_text())
    assert quality["rows_in"] == 3_504 and quality["rows_rejected"] == 4 and 0.9 < quality["score"] <= 1
    assert quality["data_sha256"] and "completeness" in quality and "duplicates" in quality
    lineage = json.loads((out / "train" / "lineage.json").read_text())
    assert lineage["data_sha256"] == quality["data_sha256"] and lineage["source_files"] == [
        "claims.csv",
        "more.parquet",
    ]
    assert (out / "train" / "feature_spec.json").is_file()
    metrics = parse_metrics(done.stdout, ["data_quality:score", "data_quality:rows_rejected"])
    assert metrics == {"data_quality:score": quality["score"], "data_quality:rows_rejected": 4.0}

    # Model Monitor's baseline data: the training claims as the record preprocessor flattens
    # captured requests, without the target and the free text.
    baseline = pd.read_json(out / "monitor_baseline" / "claims.jsonl", lines=True)
    assert len(baseline) == len(splits["train"])
    assert {"claim_amount", "claim_type", "customer_age"} <= set(baseline.columns)
    assert not {"is_high_risk", "description", "claim_id"} & set(baseline.columns)


def test_an_id_repeated_across_files_is_rejected_once(tmp_path: Path) -> None:
    raw = tmp_path / "input" / "raw"
    claims = generate_claims(400, seed=14)
    write_claims(claims, raw / "a.csv")
    write_claims(claims, raw / "b.parquet")
    assert run_job(tmp_path).returncode == 0
    rejected = pd.read_csv(tmp_path / "output" / "rejected" / "rejected.csv")
    assert len(rejected) == 400 and rejected["reason"].str.contains("duplicate").all()


def test_too_few_valid_rows_fail_with_a_clear_message(tmp_path: Path) -> None:
    raw = tmp_path / "input" / "raw"
    write_claims(generate_claims(30, seed=15), raw / "claims.csv")
    done = run_job(tmp_path, "--min-rows", "50")
    assert done.returncode == 1
    assert "only 30 valid rows (at least 50 needed)" in done.stderr
    # The report is still written, so the operator can see why.
    assert (tmp_path / "output" / "quality" / "data_quality.json").is_file()


def test_no_input_files_fail_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "input" / "raw").mkdir(parents=True)
    done = run_job(tmp_path)
    assert done.returncode == 1 and "no .csv, .parquet or .jsonl file" in done.stderr
