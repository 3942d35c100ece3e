"""Drift monitoring: detection quality on the generator's drift knob, and the job's time on 1M claims.

**Reference.** A baseline artifact (``feature_spec.json`` and ``baseline_statistics.json``, as training
writes them) built from 60k generated claims at ``drift=0``. The scores the "endpoint" returns are
the generator's true probabilities (a perfect model), so the prediction's drift is the risk's.

**Detection.** 20 clean batches of 5k claims (``drift=0``, seeds never used by the baseline) and 20
drifted batches at :data:`DOCUMENTED_DRIFT`, each compared with the baseline by the drift job's own
accumulator; a batch *alarms* when one of the three CloudWatch alarms of ``shared/alarms.py`` would
fire on its metrics. Targets: at most 1 false alarm in the 20 clean batches, at least 19 alarms in
the 20 drifted ones, and every drifted feature an alarm names is one the knob moves.

The documented magnitude is ``drift=1.0``, the generator's "strong drift": claim amounts +60% on the
Beta's first parameter, report delays doubled, a quarter of the claim mix moved to auto, 30% of the
location and region mix moved to urban and south, customers six years younger. Its largest
feature PSI is about 0.4 (the report delay and the amount-to-sum-insured ratio), well above the
alarm's 0.25 (the usual "major shift"), while clean batches stay below 0.01. ``drift=0.5`` is
measured too, without a target: its largest PSI is about 0.13, a "moderate shift" (0.1-0.25) that
the alarm, by its definition, lets pass.

**Time.** 1M claims captured as 1M single-claim exchanges (request ``{"instances": [claim]}``, the
response with five risk factors, as the model server answers), in SageMaker's capture format and
folders over 24 hours; the job runs as Model Monitor runs it (``python -m
sagemaker_jobs.monitoring.drift`` with the bring-your-own-container environment), report and plots
included. Target: at most 20 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd

from benchmarks.harness import Figure, judged
from shared.capture import capture_folder, capture_record, personal_fields
from shared.feature_spec import TARGET_COLUMN, FeatureSpec, claims_spec
from shared.ml.baseline import baseline_statistics
from shared.ml.drift import DriftAccumulator, DriftReport
from shared.ml.model import BASELINE_FILE, SPEC_FILE
from shared.ml.synthetic import SyntheticClaims, generate_claims

NAME = "monitoring"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
BASELINE_ROWS: Final = 60_000
BATCH_ROWS: Final = 5_000
BATCHES: Final = 20
DOCUMENTED_DRIFT: Final = 1.0
SMALLER_DRIFT: Final = 0.5
TIMED_CLAIMS: Final = 1_000_000
TIMED_HOURS: Final = 24
MAX_FALSE_ALARMS: Final = 1
MIN_DETECTED: Final = 19
JOB_SECONDS: Final = 20.0
ENDPOINT: Final = "claims-risk-bench"
VARIANT: Final = "AllTraffic"
BASELINE_SEED: Final = 1
CLEAN_SEEDS: Final = 1_000
DRIFTED_SEEDS: Final = 2_000

# What the knob moves: directly (mix, age, delays, amounts) or through the claim-type mix (money,
# evidence, the vehicle age only autos have) and the age (tenure is capped by it).
MOVED_BY_DRIFT: Final = frozenset(
    {
        "claim_type",
        "location",
        "region",
        "customer_age",
        "days_incident_to_report",
        "claim_amount",
        "amount_to_sum_insured",
        "amount_to_premium",
        "sum_insured",
        "annual_premium",
        "deductible",
        "police_report",
        "vehicle_age",
        "policy_tenure",
        "claim_history",
        "days_policy_start_to_incident",
    }
)


# ---------------------------------------------------------------------------------------------
# Claims as a client sends them, a baseline artifact, and a capture folder.


def claim_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Claims as JSON-ready dicts: no label, ISO dates, missing fields left out (column by column)."""
    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        if name == TARGET_COLUMN:
            continue
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series):
            text = series.dt.strftime("%Y-%m-%d")
            columns[str(name)] = text.astype(object).where(series.notna(), None).tolist()
        else:
            columns[str(name)] = series.astype(object).where(series.notna(), None).tolist()
    names = list(columns)
    return [
        {k: v for k, v in zip(names, row, strict=True) if v is not None}
        for row in zip(*columns.values(), strict=True)
    ]


def write_baseline_artifact(folder: Path, claims: SyntheticClaims, spec: FeatureSpec | None = None) -> Path:
    """The drift job's part of a model artifact: the spec and the baseline statistics, built from
    ``claims`` with their true probabilities as the validation scores."""
    spec = spec or claims_spec()
    frame = claims.frame
    stats = baseline_statistics(spec, frame, len(frame), claims.true_probability)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SPEC_FILE).write_text(spec.to_json(), encoding="utf-8")
    (folder / BASELINE_FILE).write_text(orjson.dumps(stats).decode(), encoding="utf-8")
    return folder


def prediction(claim_id: str, score: float) -> dict[str, Any]:
    """A prediction as the model server renders it, five risk factors included (their size counts)."""
    factors = [
        {
            "factor": name,
            "importance": 0.2,
            "direction": "increases_risk",
            "contribution": 0.31,
            "value": 0.5,
        }
        for name in ("amount_to_sum_insured", "claim_history", "days_incident_to_report", "region", "x")
    ]
    return {
        "claim_id": claim_id,
        "risk_level": "high" if score >= 0.5 else "low",
        "risk_score": round(score, 6),
        "confidence": round(abs(score - 0.5) * 2, 6),
        "risk_factors": factors,
        "model_version": "bench",
        "threshold": 0.5,
    }


def write_capture(
    root: Path,
    records: Sequence[Mapping[str, Any]],
    scores: Sequence[float] | np.ndarray,
    *,
    start: datetime,
    hours: int = 1,
    claims_per_request: int = 1,
    endpoint: str = ENDPOINT,
) -> list[Path]:
    """Capture lines for the claims, in SageMaker's folders, spread evenly over ``hours``."""
    exchanges = range(0, len(records), claims_per_request)
    step = timedelta(hours=hours) / max(len(exchanges), 1)
    files: dict[Path, list[bytes]] = {}
    for number, first in enumerate(exchanges):
        claims = records[first : first + claims_per_request]
        request = orjson.dumps({"instances": claims})
        answers = [
            prediction(str(c.get("claim_id", "")), float(s))
            for c, s in zip(claims, scores[first : first + claims_per_request], strict=True)
        ]
        response = orjson.dumps({"predictions": answers})
        when = start + number * step
        line = capture_record(
            request, "application/json", response, "application/json", event_id=f"e{number}", when=when
        )
        path = capture_folder(root, endpoint, VARIANT, when) / "capture.jsonl"
        files.setdefault(path, []).append(orjson.dumps(line))
    for path, lines in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\n".join(lines) + b"\n")
    return list(files)


# ---------------------------------------------------------------------------------------------
# Detection quality.


@dataclass(frozen=True)
class Reference:
    spec: FeatureSpec
    statistics: dict[str, Any]


def reference(rows: int = BASELINE_ROWS, seed: int = BASELINE_SEED) -> Reference:
    claims = generate_claims(rows, seed=seed)
    spec = claims_spec()
    frame = claims.frame
    return Reference(spec, baseline_statistics(spec, frame, len(frame), claims.true_probability))


def batch_report(ref: Reference, claims: SyntheticClaims) -> DriftReport:
    """One batch through the drift job's accumulator (no files: the decision is the same code), with
    the personal fields left out as the job leaves them out."""
    accumulator = DriftAccumulator(ref.spec, ref.statistics, unmonitored=personal_fields(ref.spec))
    accumulator.add_records(claim_records(claims.frame))
    accumulator.add_scores(claims.true_probability)
    return accumulator.report()


@dataclass(frozen=True)
class Detection:
    drift: float
    reports: list[DriftReport]

    @property
    def alarms(self) -> int:
        return sum(r.alarmed for r in self.reports)

    @property
    def wrongly_named(self) -> list[str]:
        """Features named as drifted that the knob does not move."""
        return sorted({n for r in self.reports for n in r.drifted_features if n not in MOVED_BY_DRIFT})

    def named(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.reports:
            for name in r.drifted_features:
                counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: -item[1]))

    def psi_max(self) -> list[float]:
        return [r.feature_drift_psi_max for r in self.reports]


def detection(ref: Reference, drift: float, batches: int, rows: int, first_seed: int) -> Detection:
    reports = [
        batch_report(ref, generate_claims(rows, seed=first_seed + i, drift=drift)) for i in range(batches)
    ]
    return Detection(drift, reports)


# ---------------------------------------------------------------------------------------------
# The job's time on 1M captured claims.


def drift_job_env(capture: Path, output: Path, model: Path, home: Path) -> dict[str, str]:
    """Model Monitor's bring-your-own-container environment, with the local metrics sink."""
    env = {k: v for k, v in os.environ.items() if k != "publish_cloudwatch_metrics"}
    env.update(
        dataset_source=str(capture),
        output_path=str(output),
        sagemaker_endpoint_name=ENDPOINT,
        CLAIMS_RISK_ENDPOINT=ENDPOINT,
        CLAIMS_RISK_MODEL_URI=str(model),
        CLAIMS_RISK_HOME=str(home),
        PYTHONPATH=str(REPO_ROOT),
    )
    return env


def run_drift_job(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagemaker_jobs.monitoring.drift"],
        env=dict(env),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def _timed_job(root: Path) -> tuple[float, bool, str]:
    """Seconds the job took, whether it succeeded, and its log (or its error)."""
    model = write_baseline_artifact(root / "model", generate_claims(BASELINE_ROWS, seed=BASELINE_SEED))
    claims = generate_claims(TIMED_CLAIMS, seed=7)
    start = datetime(2025, 3, 1, tzinfo=UTC)
    records = claim_records(claims.frame)
    write_capture(root / "capture", records, claims.true_probability, start=start, hours=TIMED_HOURS)
    del claims, records
    env = drift_job_env(root / "capture", root / "out", model, root / "home")
    started = time.perf_counter()
    done = run_drift_job(env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return seconds, False, done.stderr[-2000:]
    return seconds, True, done.stdout


def _summary(values: Iterable[float]) -> str:
    array = np.asarray(list(values))
    return f"max-PSI median {np.median(array):.3f}, range {array.min():.3f}-{array.max():.3f}"


def run() -> list[Figure]:
    ref = reference()
    clean = detection(ref, 0.0, BATCHES, BATCH_ROWS, CLEAN_SEEDS)
    drifted = detection(ref, DOCUMENTED_DRIFT, BATCHES, BATCH_ROWS, DRIFTED_SEEDS)
    smaller = detection(ref, SMALLER_DRIFT, BATCHES, BATCH_ROWS, DRIFTED_SEEDS)
    named = ", ".join(f"{k} {v}/{BATCHES}" for k, v in drifted.named().items())
    figures = [
        judged(
            NAME,
            "drift job",
            f"false alarms, {BATCHES} clean batches of {BATCH_ROWS:,}",
            clean.alarms,
            "batches",
            MAX_FALSE_ALARMS,
            notes=_summary(clean.psi_max()),
        ),
        judged(
            NAME,
            "drift job",
            f"alarms, {BATCHES} batches at drift={DOCUMENTED_DRIFT:g}",
            drifted.alarms,
            "batches",
            MIN_DETECTED,
            at_least=True,
            notes=f"{_summary(drifted.psi_max())}; named: {named}",
        ),
        judged(
            NAME,
            "drift job",
            "drifted features named that the knob does not move",
            len(drifted.wrongly_named + clean.wrongly_named),
            "features",
            0,
            notes=", ".join(drifted.wrongly_named + clean.wrongly_named),
        ),
        Figure(
            NAME,
            "drift job",
            f"alarms, {BATCHES} batches at drift={SMALLER_DRIFT:g} (no target)",
            smaller.alarms,
            "batches",
            notes=_summary(smaller.psi_max()),
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-monitoring-") as tmp:
        seconds, ok, output = _timed_job(Path(tmp))
        figures.append(
            judged(
                NAME,
                "drift job",
                f"job over {TIMED_CLAIMS:,} captured claims",
                seconds,
                "s",
                JOB_SECONDS,
                notes=output.strip().splitlines()[-2] if ok else f"the job FAILED: {output}",
            )
        )
    return figures
