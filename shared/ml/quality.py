"""Model quality once the truth is known: labels joined to captured predictions, judged against a baseline.

Claims are scored today and their outcome is known weeks later. Joining the outcomes (a CSV of
``claim_id`` and outcome) to what the endpoint answered (its data capture) gives precision, recall and
the false negative rate per day or week; the model's own test metrics (its manifest) are the baseline,
and a bucket whose recall or precision fell more than a tolerance below it is a drop.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from shared.capture import CapturedExchange, iter_capture_files, parse_capture_line

Bucket = Literal["day", "week"]
OUTCOME_COLUMNS: Final = ("outcome", "is_high_risk", "label", "high_risk")
_POSITIVE: Final = frozenset({"1", "1.0", "true", "yes", "high", "high_risk", "fraud"})
_NEGATIVE: Final = frozenset({"0", "0.0", "false", "no", "low", "low_risk", "legitimate"})
# Judging recall on a handful of high-risk claims is judging noise: fewer positives, no verdict.
DEFAULT_MIN_POSITIVES: Final = 20
DEFAULT_TOLERANCE: Final = 0.10  # absolute drop below the baseline that counts


@dataclass(frozen=True)
class CapturedPrediction:
    claim_id: str
    scored_at: dt.datetime
    high_risk: bool
    risk_score: float | None
    model_version: str


def _predictions(exchange: CapturedExchange) -> list[dict[str, Any]]:
    media = exchange.response_type.split(";", maxsplit=1)[0].strip().lower()
    text = exchange.response.decode("utf-8")
    if media == "application/json":
        payload = json.loads(text)
        rows = payload.get("predictions", []) if isinstance(payload, dict) else payload
        return [r for r in rows if isinstance(r, dict)]
    if media == "application/jsonlines":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if media == "text/csv":  # claim_id, risk_level, risk_score, confidence, model_version, factors
        return [
            {"claim_id": r[0], "risk_level": r[1], "risk_score": r[2], "model_version": r[4]}
            for r in csv.reader(io.StringIO(text))
            if len(r) >= 5
        ]
    return []


def _scored_at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


def predictions_from_capture(root: Path) -> Iterator[CapturedPrediction]:
    """Every prediction in the capture files under ``root``; lines that are not captures are skipped."""
    for path in iter_capture_files(root):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    exchange = parse_capture_line(line)
                    when = _scored_at(exchange.inference_time)
                    rows = _predictions(exchange)
                except (ValueError, UnicodeDecodeError, AttributeError):
                    continue  # a torn last line of a file still being written, or another format
                for row in rows:
                    if "claim_id" not in row or "risk_level" not in row:
                        continue
                    score = row.get("risk_score")
                    yield CapturedPrediction(
                        str(row["claim_id"]),
                        when,
                        str(row["risk_level"]).lower() == "high",
                        float(score) if score not in (None, "") else None,
                        str(row.get("model_version", "")),
                    )


def parse_outcome(value: str) -> bool:
    text = value.strip().lower()
    if text in _POSITIVE:
        return True
    if text in _NEGATIVE:
        return False
    raise ValueError(f"an outcome is 1/0, true/false, yes/no or high/low, not {value!r}")


def read_labels(text: str, outcome_column: str | None = None) -> dict[str, bool]:
    """``claim_id`` → whether the claim turned out high risk, from CSV text with a header row."""
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "claim_id" not in columns:
        raise ValueError(f"the labels need a claim_id column; found {columns}")
    column = outcome_column
    if column is None:
        known = [c for c in OUTCOME_COLUMNS if c in columns]
        others = [c for c in columns if c != "claim_id"]
        column = known[0] if known else (others[0] if len(others) == 1 else None)
    if column is None or column not in columns:
        raise ValueError(f"which column is the outcome? name it (one of {OUTCOME_COLUMNS}); found {columns}")
    labels = {}
    for number, raw in enumerate(reader, start=2):
        row = {k.strip(): v for k, v in raw.items() if k is not None}
        claim_id = (row.get("claim_id") or "").strip()
        if not claim_id:
            continue
        try:
            labels[claim_id] = parse_outcome(row.get(column) or "")
        except ValueError as error:
            raise ValueError(f"line {number}: {error}") from None
    return labels


@dataclass(frozen=True)
class QualityMetrics:
    labelled: int
    positives: int  # claims that turned out high risk
    flagged: int  # claims the model called high risk
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def precision(self) -> float | None:
        return self.tp / self.flagged if self.flagged else None

    @property
    def recall(self) -> float | None:
        return self.tp / self.positives if self.positives else None

    @property
    def false_negative_rate(self) -> float | None:
        return self.fn / self.positives if self.positives else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "labelled": self.labelled,
            "positives": self.positives,
            "flagged": self.flagged,
            "confusion_matrix": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn},
            "precision": self.precision,
            "recall": self.recall,
            "false_negative_rate": self.false_negative_rate,
        }


def quality_metrics(pairs: Iterable[tuple[bool, bool]]) -> QualityMetrics:
    """From (predicted high risk, turned out high risk) pairs."""
    tp = fp = fn = tn = 0
    for predicted, actual in pairs:
        if predicted and actual:
            tp += 1
        elif predicted:
            fp += 1
        elif actual:
            fn += 1
        else:
            tn += 1
    return QualityMetrics(tp + fp + fn + tn, tp + fn, tp + fp, tp, fp, fn, tn)


@dataclass(frozen=True)
class Baseline:
    precision: float
    recall: float
    false_negative_rate: float
    split: str  # which of the manifest's metrics
    model_version: str


def baseline_from_manifest(manifest: Mapping[str, Any]) -> Baseline:
    """The model's test metrics (the holdout it was judged on); validation ones if it had no test split."""
    metrics = manifest.get("metrics", {})
    for split in ("test", "validation"):
        chosen = metrics.get(split)
        if isinstance(chosen, dict) and {"precision", "recall"} <= set(chosen):
            recall = float(chosen["recall"])
            return Baseline(
                float(chosen["precision"]),
                recall,
                float(chosen.get("false_negative_rate", 1 - recall)),
                split,
                str(manifest.get("model_version", "")),
            )
    raise ValueError("the manifest holds no test or validation precision and recall")


def bucket_start(when: dt.datetime, bucket: Bucket) -> dt.date:
    day = when.astimezone(dt.UTC).date()
    return day - dt.timedelta(days=day.weekday()) if bucket == "week" else day  # weeks start on Monday


@dataclass(frozen=True)
class BucketQuality:
    start: dt.date
    metrics: QualityMetrics
    model_versions: tuple[str, ...]
    drops: tuple[str, ...]  # what fell below the baseline, readable


@dataclass(frozen=True)
class QualityReport:
    baseline: Baseline
    bucket: Bucket
    buckets: list[BucketQuality]
    overall: QualityMetrics
    labels_without_prediction: int  # labelled claims the capture never saw (not sampled, or elsewhere)
    tolerance: float
    min_positives: int
    judged: BucketQuality | None = None  # the newest bucket with enough labels to judge
    notes: list[str] = field(default_factory=list)

    @property
    def alarm(self) -> bool:
        return bool(self.judged and self.judged.drops)

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline.__dict__,
            "bucket": self.bucket,
            "buckets": [
                {
                    "start": b.start.isoformat(),
                    **b.metrics.as_dict(),
                    "model_versions": list(b.model_versions),
                    "drops": list(b.drops),
                }
                for b in self.buckets
            ],
            "overall": self.overall.as_dict(),
            "labels_without_prediction": self.labels_without_prediction,
            "tolerance": self.tolerance,
            "min_positives": self.min_positives,
            "judged": self.judged.start.isoformat() if self.judged else None,
            "alarm": self.alarm,
            "notes": self.notes,
        }


def _drops(metrics: QualityMetrics, baseline: Baseline, tolerance: float, min_positives: int) -> list[str]:
    drops = []
    recall, precision, fnr = metrics.recall, metrics.precision, metrics.false_negative_rate
    enough_positives = metrics.positives >= min_positives
    if recall is not None and fnr is not None and enough_positives and recall < baseline.recall - tolerance:
        drops.append(
            f"recall {recall:.2f} < baseline {baseline.recall:.2f} - {tolerance:.2f} "
            f"(FNR {fnr:.2f} vs {baseline.false_negative_rate:.2f})"
        )
    enough_flagged = metrics.flagged >= min_positives
    if precision is not None and enough_flagged and precision < baseline.precision - tolerance:
        drops.append(f"precision {precision:.2f} < baseline {baseline.precision:.2f} - {tolerance:.2f}")
    return drops


def quality_report(
    predictions: Iterable[CapturedPrediction],
    labels: Mapping[str, bool],
    baseline: Baseline,
    bucket: Bucket = "day",
    tolerance: float = DEFAULT_TOLERANCE,
    min_positives: int = DEFAULT_MIN_POSITIVES,
) -> QualityReport:
    # A claim scored more than once (a retry, a re-score) counts once, with its latest answer.
    latest: dict[str, CapturedPrediction] = {}
    for prediction in predictions:
        if prediction.claim_id in labels:
            seen = latest.get(prediction.claim_id)
            if seen is None or prediction.scored_at >= seen.scored_at:
                latest[prediction.claim_id] = prediction
    grouped: dict[dt.date, list[CapturedPrediction]] = {}
    for prediction in latest.values():
        grouped.setdefault(bucket_start(prediction.scored_at, bucket), []).append(prediction)
    buckets = []
    for start in sorted(grouped):
        members = grouped[start]
        metrics = quality_metrics((p.high_risk, labels[p.claim_id]) for p in members)
        versions = tuple(sorted({p.model_version for p in members}))
        drops = tuple(_drops(metrics, baseline, tolerance, min_positives))
        buckets.append(BucketQuality(start, metrics, versions, drops))
    overall = quality_metrics((p.high_risk, labels[p.claim_id]) for p in latest.values())
    judged = next(
        (
            b
            for b in reversed(buckets)
            if b.metrics.positives >= min_positives or b.metrics.flagged >= min_positives
        ),
        None,
    )
    notes = []
    others = {p.model_version for p in latest.values()} - {baseline.model_version, ""}
    if others:
        notes.append(
            f"predictions of {', '.join(sorted(others))} are judged against {baseline.model_version}'s "
            "baseline"
        )
    if judged is None and buckets:
        notes.append(f"no {bucket} has {min_positives} high-risk or flagged claims yet: no verdict")
    return QualityReport(
        baseline,
        bucket,
        buckets,
        overall,
        len(set(labels) - set(latest)),
        tolerance,
        min_positives,
        judged,
        notes,
    )
