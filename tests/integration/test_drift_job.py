"""The drift job as Model Monitor runs it: ``python -m sagemaker_jobs.monitoring.drift`` under the
bring-your-own-container environment, over a capture folder in SageMaker's format."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from click.testing import CliRunner

from benchmarks.bench_monitoring import (
    ENDPOINT,
    claim_records,
    drift_job_env,
    run_drift_job,
    write_baseline_artifact,
    write_capture,
)
from local.cli_monitor import monitor
from sagemaker_jobs.monitoring import drift as drift_job
from shared.adapters.metrics import LocalMetricsSink
from shared.alarms import ALARMS, MONITORING_NAMESPACE
from shared.ml.model import pack_model_dir
from shared.ml.synthetic import generate_claims

# Model Monitor's documented structure of constraint_violations.json, as a JSON Schema.
VIOLATIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["violations"],
    "properties": {
        "violations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["feature_name", "constraint_check_type", "description"],
                "additionalProperties": False,
                "properties": {
                    "feature_name": {"type": "string"},
                    "constraint_check_type": {
                        "enum": [
                            "data_type_check",
                            "completeness_check",
                            "baseline_drift_check",
                            "missing_column_check",
                            "extra_column_check",
                            "categorical_values_check",
                        ]
                    },
                    "description": {"type": "string"},
                },
            },
        }
    },
}
START = datetime(2025, 3, 1, 10, tzinfo=UTC)
DOCUMENTED_DRIFT = 1.0


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    return write_baseline_artifact(folder, generate_claims(20_000, seed=1))


def capture_of(root: Path, rows: int, seed: int, drift: float, start: datetime = START) -> Path:
    claims = generate_claims(rows, seed=seed, drift=drift)
    write_capture(
        root, claim_records(claims.frame), claims.true_probability, start=start, claims_per_request=4
    )
    return root


def run_job(
    tmp: Path, capture: Path, model: Path | str, **env: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    variables = drift_job_env(capture, tmp / "out", Path(model), tmp / "home") | env
    return run_drift_job(variables), tmp / "out"


def violations_of(out: Path) -> list[dict[str, Any]]:
    document = json.loads((out / "constraint_violations.json").read_text(encoding="utf-8"))
    errors = [e.message for e in jsonschema_rs.iter_errors(VIOLATIONS_SCHEMA, document)]
    assert errors == [], errors
    found: list[dict[str, Any]] = document["violations"]
    return found


def monitoring_alarm_metrics() -> set[str]:
    return {d.metric for d in ALARMS if d.namespace == MONITORING_NAMESPACE}


def test_the_schema_rejects_what_model_monitor_would_not_read() -> None:
    wrong = {"violations": [{"feature_name": "x", "constraint_check_type": "psi_check", "description": ""}]}
    assert list(jsonschema_rs.iter_errors(VIOLATIONS_SCHEMA, wrong))
    assert list(jsonschema_rs.iter_errors(VIOLATIONS_SCHEMA, {"violation": []}))


def test_a_clean_hour_gives_no_violations_and_publishes_the_alarmed_metrics(
    model: Path, tmp_path: Path
) -> None:
    capture = capture_of(tmp_path / "capture", 2_000, seed=21, drift=0.0)
    done, out = run_job(tmp_path, capture, model)
    assert done.returncode == 0, done.stderr
    assert violations_of(out) == []
    report = json.loads((out / "drift_report.json").read_text(encoding="utf-8"))
    assert (report["claims"], report["scored"], report["alarms"]) == (2_000, 2_000, [])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "No drift alarm" in page and 'id="plot-psi"' in page and "data:image/png;base64," in page
    metrics = list(LocalMetricsSink(tmp_path / "home" / "monitoring" / "metrics.jsonl").read())
    alarmed = {m.name: m for m in metrics if set(m.dimensions) == {"Endpoint"}}
    assert set(alarmed) == monitoring_alarm_metrics()
    assert {m.namespace for m in metrics} == {MONITORING_NAMESPACE}
    assert {m.dimensions["Endpoint"] for m in metrics} == {ENDPOINT}
    for definition in ALARMS:
        if definition.metric in alarmed:
            assert alarmed[definition.metric].value <= definition.threshold
    per_feature = {m.dimensions["Feature"] for m in metrics if "Feature" in m.dimensions}
    assert {"claim_amount", "days_incident_to_report", "claim_type"} <= per_feature


def test_a_drifted_hour_names_the_drifted_features_and_sets_off_the_alarm(
    model: Path, tmp_path: Path
) -> None:
    capture = capture_of(tmp_path / "capture", 2_000, seed=22, drift=DOCUMENTED_DRIFT)
    done, out = run_job(tmp_path, capture, model)
    assert done.returncode == 0, done.stderr  # drift is a finding, not a failure
    drifted = {
        v["feature_name"] for v in violations_of(out) if v["constraint_check_type"] == "baseline_drift_check"
    }
    assert "days_incident_to_report" in drifted
    assert not drifted & {"gender", "witnesses", "incident_month"}  # the knob leaves these alone
    report = json.loads((out / "drift_report.json").read_text(encoding="utf-8"))
    assert "feature-drift" in report["alarms"]
    metrics = LocalMetricsSink(tmp_path / "home" / "monitoring" / "metrics.jsonl").read()
    endpoint_level = {m.name: m.value for m in metrics if set(m.dimensions) == {"Endpoint"}}
    fired = {d.key for d in ALARMS if d.metric in endpoint_level and endpoint_level[d.metric] > d.threshold}
    assert fired == set(report["alarms"])
    assert "ALARM" in (out / "report.html").read_text(encoding="utf-8")


def test_a_capture_without_the_personal_fields_is_not_a_missing_column(model: Path, tmp_path: Path) -> None:
    """The model server's capture drops the protected attributes and the free text: not drift."""
    claims = generate_claims(1_000, seed=29)
    personal = {"customer_age", "gender", "location", "description"}
    records = [{k: v for k, v in r.items() if k not in personal} for r in claim_records(claims.frame)]
    write_capture(tmp_path / "capture", records, claims.true_probability, start=START)
    done, out = run_job(tmp_path, tmp_path / "capture", model)
    assert done.returncode == 0, done.stderr
    assert violations_of(out) == []
    report = json.loads((out / "drift_report.json").read_text(encoding="utf-8"))
    assert not personal & {f["name"] for f in report["features"]}
    assert report["alarms"] == []


def test_only_the_window_is_read(model: Path, tmp_path: Path) -> None:
    capture = capture_of(tmp_path / "capture", 1_000, seed=23, drift=0.0)
    capture_of(capture, 1_000, seed=24, drift=DOCUMENTED_DRIFT, start=START + timedelta(hours=1))
    done, out = run_job(
        tmp_path,
        capture,
        model,
        start_time=START.isoformat().replace("+00:00", "Z"),
        end_time=(START + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "drift_report.json").read_text(encoding="utf-8"))
    assert report["claims"] == 1_000 and violations_of(out) == []


def test_the_model_can_be_a_tarball_as_in_s3(model: Path, tmp_path: Path) -> None:
    tarball = pack_model_dir(model, tmp_path / "model.tar.gz")
    done, out = run_job(tmp_path, capture_of(tmp_path / "capture", 500, seed=25, drift=0.0), tarball)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "drift_report.json").read_text(encoding="utf-8"))["claims"] == 500


def test_files_shared_among_worker_processes_give_the_same_report(model: Path, tmp_path: Path) -> None:
    capture = capture_of(tmp_path / "capture", 1_000, seed=27, drift=DOCUMENTED_DRIFT)
    capture_of(capture, 1_000, seed=28, drift=0.0, start=START + timedelta(hours=1))
    files = drift_job.files_in_window(capture, None, None)
    baseline = drift_job.load_baseline(model)
    alone, alone_counts = drift_job.read_capture(files, baseline, workers=1)
    shared, shared_counts = drift_job.read_capture(files, baseline, workers=2)
    assert len(files) == 2 and alone.claims == 2_000
    assert shared.report() == alone.report()
    assert (shared_counts.lines, shared_counts.in_window) == (alone_counts.lines, alone_counts.in_window)


def test_unreadable_input_fails_with_a_clear_message(model: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "capture" / ENDPOINT / "AllTraffic" / "2025" / "03" / "01" / "10" / "x.jsonl"
    garbage.parent.mkdir(parents=True)
    garbage.write_text("this is not a capture line\n", encoding="utf-8")
    done, _ = run_job(tmp_path, tmp_path / "capture", model)
    assert done.returncode == drift_job.EXIT_UNREADABLE
    assert "none of the 1 capture lines could be read" in done.stderr
    done, _ = run_job(tmp_path, tmp_path / "capture", tmp_path / "no-model")
    assert done.returncode == drift_job.EXIT_UNREADABLE and "no model at" in done.stderr


def test_detection_at_small_sizes_through_the_job(model: Path, tmp_path: Path) -> None:
    """Four clean and four drifted hours of 1,500 claims, each a whole run of the job (in process)."""
    alarms: dict[float, list[bool]] = {0.0: [], DOCUMENTED_DRIFT: []}
    for drift, alarmed in alarms.items():
        for i in range(4):
            root = tmp_path / f"{drift}-{i}"
            capture = capture_of(root / "capture", 1_500, seed=300 + i, drift=drift)
            config = drift_job.config_from(
                ["--capture", str(capture), "--model-dir", str(model), "--out", str(root / "out")], {}
            )
            report = drift_job.run(config, LocalMetricsSink(root / "metrics.jsonl"))
            alarmed.append(report.alarmed)
            assert bool(violations_of(root / "out")) == report.alarmed
    assert alarms == {0.0: [False] * 4, DOCUMENTED_DRIFT: [True] * 4}


def test_monitor_run_on_the_local_capture(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    models = home / "models"
    (models / "v1").mkdir(parents=True)
    for path in model.iterdir():
        (models / "v1" / path.name).write_bytes(path.read_bytes())
    (models / "current.json").write_text(json.dumps({"model_version": "v1"}), encoding="utf-8")
    capture_of(home / "capture", 1_000, seed=26, drift=DOCUMENTED_DRIFT)
    monkeypatch.setenv("CLAIMS_RISK_HOME", str(home))
    result = CliRunner().invoke(monitor, ["run"])
    assert result.exit_code == 0, result.output
    assert "ALARM" in result.output and "days_incident_to_report" in result.output
    [report_dir] = list((home / "monitoring" / "reports").iterdir())
    assert (report_dir / "report.html").is_file() and violations_of(report_dir)
    names = {m.name for m in LocalMetricsSink(home / "monitoring" / "metrics.jsonl").read()}
    assert names == monitoring_alarm_metrics()


def test_monitor_run_without_a_serving_model_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAIMS_RISK_HOME", str(tmp_path))
    result = CliRunner().invoke(monitor, ["run"])
    assert result.exit_code != 0 and "no serving model" in result.output
