"""Model quality once the truth is known: labels joined to captured predictions, judged against a baseline.

Claims are scored today and their outcome is known weeks later. The outcomes table of the claims
lake (:mod:`shared.lake`), joined in SQL to the captured inferences, gives precision, recall and the
false negative rate per day or week; the model's own test metrics (its manifest) are the baseline,
and a bucket whose recall or precision fell more than a tolerance below it is a drop.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from shared.lake import LABELS_WITHOUT_PREDICTION, model_versions_by_bucket, quality_by_bucket

if TYPE_CHECKING:
    from shared.ports import ClaimsLake

Bucket = Literal["day", "week"]
OUTCOME_COLUMNS: Final = ("outcome", "is_high_risk", "label", "high_risk")
_POSITIVE: Final = frozenset({"1", "1.0", "true", "yes", "high", "high_risk", "fraud"})
_NEGATIVE: Final = frozenset({"0", "0.0", "false", "no", "low", "low_risk", "legitimate"})
# Judging recall on a handful of high-risk claims is judging noise: fewer positives, no verdict.
DEFAULT_MIN_POSITIVES: Final = 20
DEFAULT_TOLERANCE: Final = 0.10  # absolute drop below the baseline that counts


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


def _metrics(row: Mapping[Any, Any]) -> QualityMetrics:
    tp, fp, fn, tn = (int(row[k]) for k in ("tp", "fp", "fn", "tn"))
    return QualityMetrics(tp + fp + fn + tn, tp + fn, tp + fp, tp, fp, fn, tn)


def quality_report(
    lake: ClaimsLake,
    baseline: Baseline,
    bucket: Bucket = "day",
    tolerance: float = DEFAULT_TOLERANCE,
    min_positives: int = DEFAULT_MIN_POSITIVES,
) -> QualityReport:
    """The outcomes in the lake joined to the captured predictions, in the lake's SQL: each labelled
    claim once, with its latest prediction (a retry or a re-score counts once) and its latest outcome.
    Only the per-bucket counts leave the engine."""
    counts = lake.query(quality_by_bucket(bucket))
    versions: dict[dt.date, list[str]] = {}
    for row in lake.query(model_versions_by_bucket(bucket)).to_dict("records"):
        versions.setdefault(_day(row["bucket_start"]), []).append(str(row["model_version"] or ""))
    buckets = []
    for row in counts.to_dict("records"):
        start = _day(row["bucket_start"])
        metrics = _metrics(row)
        drops = tuple(_drops(metrics, baseline, tolerance, min_positives))
        buckets.append(BucketQuality(start, metrics, tuple(sorted(versions.get(start, []))), drops))
    overall = _metrics({k: int(counts[k].sum()) for k in ("tp", "fp", "fn", "tn")})
    judged = next(
        (
            b
            for b in reversed(buckets)
            if b.metrics.positives >= min_positives or b.metrics.flagged >= min_positives
        ),
        None,
    )
    notes = []
    others = {v for b in buckets for v in b.model_versions} - {baseline.model_version, ""}
    if others:
        notes.append(
            f"predictions of {', '.join(sorted(others))} are judged against {baseline.model_version}'s "
            "baseline"
        )
    if judged is None and buckets:
        notes.append(f"no {bucket} has {min_positives} high-risk or flagged claims yet: no verdict")
    unmatched = int(lake.query(LABELS_WITHOUT_PREDICTION)["claims"].iloc[0])
    return QualityReport(
        baseline, bucket, buckets, overall, unmatched, tolerance, min_positives, judged, notes
    )


def _day(value: Any) -> dt.date:
    """A bucket's start as either engine returns a DATE (a date, a Timestamp or ISO text)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])
