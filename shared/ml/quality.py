"""Model quality once the truth is known: labels joined to captured predictions, judged against a baseline.

Claims are scored today and their outcome is known weeks later. The outcomes table of the claims
lake (:mod:`shared.lake`), joined in SQL to the captured inferences, gives precision, recall and the
false negative rate per day or week (at the model's threshold: the decisions it made), and ROC-AUC
and PR-AUC from the risk scores; the model's own test metrics (its manifest) are the baseline, and a
bucket whose recall or precision fell more than a tolerance below it is a drop.

The tolerance is the ``model-quality`` alarm's threshold (:mod:`shared.alarms`): each run publishes
the newest judged bucket's largest drop as that alarm's metric, so the offline command's verdict and
the CloudWatch alarm's are the same comparison. :func:`judge_outcomes` is the one sequence both
worlds run: ``claims-risk monitor quality`` offline, the quality job in AWS
(``sagemaker_jobs/monitoring/quality.py``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from shared.alarms import (
    FNR_METRIC,
    LABELLED_METRIC,
    PR_AUC_METRIC,
    PRECISION_METRIC,
    QUALITY_DROP_METRIC,
    QUALITY_NAMESPACE,
    RECALL_METRIC,
    ROC_AUC_METRIC,
    alarm,
)
from shared.lake import (
    LABELLED_PREDICTIONS,
    LABELS_WITHOUT_PREDICTION,
    OUTCOMES,
    model_versions_by_bucket,
    quality_by_bucket,
    sql_text,
)
from shared.lake_writers import MetricRow, load_id_of, write_monitoring, write_outcomes
from shared.ports import MetricDatum

if TYPE_CHECKING:
    from shared.ports import ClaimsLake, MetricsPublisher

Bucket = Literal["day", "week"]
OUTCOME_COLUMNS: Final = ("outcome", "is_high_risk", "label", "high_risk")
_POSITIVE: Final = frozenset({"1", "1.0", "true", "yes", "high", "high_risk", "fraud"})
_NEGATIVE: Final = frozenset({"0", "0.0", "false", "no", "low", "low_risk", "legitimate"})
# Judging recall on a handful of high-risk claims is judging noise: fewer positives, no verdict.
DEFAULT_MIN_POSITIVES: Final = 20
QUALITY_ALARM: Final = alarm("model-quality")
# The absolute drop below the baseline that counts: the alarm's threshold, so both judge alike.
DEFAULT_TOLERANCE: Final = QUALITY_ALARM.threshold
# Scores are counted in this many equal bins in the lake (only counts leave it): ROC-AUC and PR-AUC
# are exact for scores rounded down to 1/1000, within about 0.001 of the raw scores' figures.
SCORE_BINS: Final = 1000
# A labels file is read whole; past this it is refused with a clear message (split it: every file
# is its own partition and all of them count).
MAX_LABELS_BYTES: Final = 256 * 2**20


class OutcomesError(ValueError):
    """A labels file that cannot be loaded; the message says which file and why. Nothing was kept."""


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
        shown = columns if len(str(columns)) <= 200 else f"{str(columns)[:200]}..."
        raise ValueError(
            "the labels are a CSV with a header row naming a claim_id column and the outcome "
            f"(claim_id,outcome); found the columns {shown}"
        )
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
    roc_auc: float | None = None  # absent from an older manifest: then not compared
    pr_auc: float | None = None


def baseline_from_manifest(manifest: Mapping[str, Any]) -> Baseline:
    """The model's test metrics (the holdout it was judged on); validation ones if it had no test split."""
    metrics = manifest.get("metrics", {})
    for split in ("test", "validation"):
        chosen = metrics.get(split)
        if isinstance(chosen, dict) and {"precision", "recall"} <= set(chosen):
            recall = float(chosen["recall"])

            def optional(name: str, figures: Mapping[str, Any] = chosen) -> float | None:
                value = figures.get(name)
                return float(value) if isinstance(value, (int, float)) else None

            return Baseline(
                float(chosen["precision"]),
                recall,
                float(chosen.get("false_negative_rate", 1 - recall)),
                split,
                str(manifest.get("model_version", "")),
                optional("roc_auc"),
                optional("pr_auc"),
            )
    raise ValueError("the manifest holds no test or validation precision and recall")


def bucket_start(when: dt.datetime, bucket: Bucket) -> dt.date:
    day = when.astimezone(dt.UTC).date()
    return day - dt.timedelta(days=day.weekday()) if bucket == "week" else day  # weeks start on Monday


@dataclass(frozen=True)
class Ranking:
    """How well the risk scores rank the claims whose outcome is known (threshold-free)."""

    roc_auc: float | None  # None without both outcomes
    pr_auc: float | None  # average precision; None without a high-risk claim
    scored: int  # labelled claims with a score


def ranking_from_bins(bins: Iterable[tuple[int, int, int]]) -> Ranking:
    """ROC-AUC and average precision from (score bin, high-risk claims, other claims) counts; claims
    in one bin count as tied (ROC-AUC gives a tie half; average precision takes a bin as one
    threshold, as scikit-learn takes tied scores)."""
    counts: dict[int, list[int]] = {}
    for score_bin, positives, negatives in bins:
        pair = counts.setdefault(int(score_bin), [0, 0])
        pair[0] += int(positives)
        pair[1] += int(negatives)
    total_pos = sum(p for p, _ in counts.values())
    total_neg = sum(n for _, n in counts.values())
    roc = pr = None
    if total_pos and total_neg:
        below, area = 0, 0.0
        for score_bin in sorted(counts):  # lowest scores first
            pos, neg = counts[score_bin]
            area += pos * (below + 0.5 * neg)
            below += neg
        roc = area / (total_pos * total_neg)
    if total_pos:
        tp = fp = 0
        recall_before, precision_sum = 0.0, 0.0
        for score_bin in sorted(counts, reverse=True):  # highest scores first: thresholds going down
            pos, neg = counts[score_bin]
            if not pos and not neg:
                continue
            tp, fp = tp + pos, fp + neg
            recall = tp / total_pos
            precision_sum += (recall - recall_before) * tp / (tp + fp)
            recall_before = recall
        pr = precision_sum
    return Ranking(roc, pr, total_pos + total_neg)


@dataclass(frozen=True)
class BucketQuality:
    start: dt.date
    metrics: QualityMetrics
    model_versions: tuple[str, ...]
    drops: tuple[str, ...]  # what fell below the baseline, readable
    ranking: Ranking | None = None  # from the scores; None when no labelled claim had one


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
                    "roc_auc": b.ranking.roc_auc if b.ranking else None,
                    "pr_auc": b.ranking.pr_auc if b.ranking else None,
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


def judged_drops(metrics: QualityMetrics, baseline: Baseline, min_positives: int) -> dict[str, float]:
    """How far recall and precision fell below the baseline (negative: above it), for each the bucket
    has enough claims to judge: recall with ``min_positives`` high-risk claims, precision with as
    many flagged. The alarm's metric is the largest of these."""
    drops = {}
    if metrics.recall is not None and metrics.positives >= min_positives:
        drops["recall"] = baseline.recall - metrics.recall
    if metrics.precision is not None and metrics.flagged >= min_positives:
        drops["precision"] = baseline.precision - metrics.precision
    return drops


def _drops(metrics: QualityMetrics, baseline: Baseline, tolerance: float, min_positives: int) -> list[str]:
    drops = []
    judged = judged_drops(metrics, baseline, min_positives)
    fnr = metrics.false_negative_rate
    # The alarm's comparison (drop > threshold), so a verdict here is the alarm's for the same figures.
    if "recall" in judged and judged["recall"] > tolerance:
        drops.append(
            f"recall {metrics.recall:.2f} < baseline {baseline.recall:.2f} - {tolerance:.2f} "
            f"(FNR {fnr or 0.0:.2f} vs {baseline.false_negative_rate:.2f})"
        )
    if "precision" in judged and judged["precision"] > tolerance:
        drops.append(
            f"precision {metrics.precision:.2f} < baseline {baseline.precision:.2f} - {tolerance:.2f}"
        )
    return drops


def _metrics(row: Mapping[Any, Any]) -> QualityMetrics:
    tp, fp, fn, tn = (int(row[k]) for k in ("tp", "fp", "fn", "tn"))
    return QualityMetrics(tp + fp + fn + tn, tp + fn, tp + fp, tp, fp, fn, tn)


def score_bins_by_bucket(bucket: Bucket) -> str:
    """High-risk and other outcomes per score bin and day or week, for ROC-AUC and PR-AUC: each
    labelled claim once, with its latest prediction and latest outcome, as
    :data:`shared.lake.LABELLED_PREDICTIONS` takes them (Athena's dialect, run on both engines)."""
    return f"""
WITH labelled AS ({LABELLED_PREDICTIONS})
SELECT CAST(date_trunc('{bucket}', inference_time) AS DATE) AS bucket_start,
       least(greatest(CAST(floor(risk_score * {SCORE_BINS}) AS BIGINT), 0), {SCORE_BINS - 1}) AS score_bin,
       count_if(outcome) AS positives,
       count_if(NOT outcome) AS negatives
FROM labelled
WHERE risk_score IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
"""


def load_without_prediction(load_id: str) -> str:
    """How many claims of one labels file the lake has, and how many of them it holds no prediction
    for (captured from the endpoint or scored in a batch file)."""
    return f"""
SELECT count(*) AS claims, count_if(p.claim_id IS NULL) AS without_prediction
FROM (SELECT DISTINCT claim_id FROM outcomes WHERE load_id = {sql_text(load_id)}) o
LEFT JOIN (
    SELECT claim_id FROM inferences
    UNION
    SELECT claim_id FROM batch_scored
) p ON p.claim_id = o.claim_id
"""


def quality_queries() -> dict[str, str]:
    """This module's own queries, for the tests that run them on both engines."""
    return {
        "score_bins_by_day": score_bins_by_bucket("day"),
        "score_bins_by_week": score_bins_by_bucket("week"),
        "load_without_prediction": load_without_prediction("0" * 32),
    }


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
    bins: dict[dt.date, list[tuple[int, int, int]]] = {}
    for row in lake.query(score_bins_by_bucket(bucket)).to_dict("records"):
        bins.setdefault(_day(row["bucket_start"]), []).append(
            (int(row["score_bin"]), int(row["positives"]), int(row["negatives"]))
        )
    buckets = []
    for row in counts.to_dict("records"):
        start = _day(row["bucket_start"])
        metrics = _metrics(row)
        drops = tuple(_drops(metrics, baseline, tolerance, min_positives))
        ranking = ranking_from_bins(bins[start]) if start in bins else None
        buckets.append(BucketQuality(start, metrics, tuple(sorted(versions.get(start, []))), drops, ranking))
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


# ---------------------------------------------------------------------------------------------
# A labels file into the lake, and a run's figures out of it (the CLI's and the AWS job's).


@dataclass(frozen=True)
class OutcomesLoad:
    load_id: str  # the outcomes partition: the file's content hash
    source_file: str
    claims: int
    without_prediction: int  # of them, claims the lake holds no captured prediction for

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_outcomes(
    lake: ClaimsLake, content: bytes, source_file: str, outcome_column: str | None = None
) -> OutcomesLoad:
    """A labels file's outcomes into their own partition (loading the same file again replaces it).

    Refused with an :class:`OutcomesError`, leaving the lake as it was: a file that is not UTF-8
    CSV text, one without a claim_id or an outcome column, an unreadable outcome, no labelled claim,
    and a file none of whose claims the lake has a prediction for (another system's ids, or
    the wrong column). Claims without a prediction among others are kept and counted: the capture
    may sample, or a claim may have been scored in the drop folder."""
    if len(content) > MAX_LABELS_BYTES:
        raise OutcomesError(
            f"{source_file}: {len(content):,} bytes, more than the {MAX_LABELS_BYTES:,} a labels file "
            "may hold: split it (each file counts, in its own partition)"
        )
    try:
        text = content.decode("utf-8-sig")  # a spreadsheet's CSV may start with a byte-order mark
    except UnicodeDecodeError:
        raise OutcomesError(
            f"{source_file}: not UTF-8 text; the labels are a CSV file (claim_id,outcome)"
        ) from None
    try:
        labels = read_labels(text, outcome_column)
    except (ValueError, csv.Error) as error:
        raise OutcomesError(f"{source_file}: {error}") from None
    if not labels:
        raise OutcomesError(f"{source_file}: no labelled claim (a header and no rows?)")
    load_id = write_outcomes(lake, labels, content, source_file)
    answer = lake.query(load_without_prediction(load_id)).to_dict("records")[0]
    claims, unknown = int(answer["claims"]), int(answer["without_prediction"])
    if claims and unknown == claims:
        lake.write(OUTCOMES, {"load_id": load_id}, [])  # the partition as it was before: none
        examples = ", ".join(sorted(labels)[:3])
        raise OutcomesError(
            f"{source_file}: none of its {claims:,} claims (e.g. {examples}) has a prediction in the "
            "lake (inferences or batch_scored): outcomes of another system, or the wrong id column? Nothing "
            "was loaded"
        )
    return OutcomesLoad(load_id, source_file, claims, unknown)


def quality_rows(report: QualityReport) -> list[MetricRow]:
    """Each bucket's figures as the lake's monitoring rows, its window the bucket's days."""
    days = 7 if report.bucket == "week" else 1
    base = report.baseline
    rows = []
    for b in report.buckets:
        start = dt.datetime.combine(b.start, dt.datetime.min.time(), dt.UTC)
        window = (start, start + dt.timedelta(days=days))
        m = b.metrics
        ranking = b.ranking or Ranking(None, None, 0)
        figures = (
            ("labelled", m.labelled, None),
            ("precision", m.precision, base.precision - report.tolerance),
            ("recall", m.recall, base.recall - report.tolerance),
            ("false_negative_rate", m.false_negative_rate, None),
            ("roc_auc", ranking.roc_auc, None),
            ("pr_auc", ranking.pr_auc, None),
        )
        for name, value, floor in figures:
            violated = name in ("precision", "recall") and any(d.startswith(name) for d in b.drops)
            rows.append(MetricRow(name, None if value is None else float(value), "", floor, violated, window))
    return rows


def quality_metric_data(report: QualityReport, endpoint: str, at: float | None = None) -> list[MetricDatum]:
    """The newest judged bucket's figures as metrics (dimension Endpoint), the alarm's included;
    none without a judged bucket: the alarm keeps its state until labels can be judged."""
    judged = report.judged
    if judged is None:
        return []
    stamp = time.time() if at is None else at
    dimensions = {"Endpoint": endpoint}
    base, m = report.baseline, judged.metrics
    ranking = judged.ranking or Ranking(None, None, 0)
    enough = m.positives >= report.min_positives and m.labelled - m.positives >= 1
    figures: list[tuple[str, float | None, float | None]] = [
        (RECALL_METRIC, m.recall, base.recall),
        (PRECISION_METRIC, m.precision, base.precision),
        (FNR_METRIC, m.false_negative_rate, None),
        (ROC_AUC_METRIC, ranking.roc_auc if enough else None, base.roc_auc),
        (PR_AUC_METRIC, ranking.pr_auc if enough else None, base.pr_auc),
    ]
    data = [MetricDatum(LABELLED_METRIC, float(m.labelled), dimensions, "Count", stamp)]
    for name, value, tested in figures:
        if value is None:
            continue
        data.append(MetricDatum(name, float(value), dimensions, "None", stamp))
        if tested is not None:
            data.append(MetricDatum(f"{name}_drop", tested - float(value), dimensions, "None", stamp))
    drops = judged_drops(m, base, report.min_positives)
    if drops:
        data.append(MetricDatum(QUALITY_DROP_METRIC, max(drops.values()), dimensions, "None", stamp))
    return data


@dataclass(frozen=True)
class QualityRun:
    run_id: str
    load: OutcomesLoad | None
    report: QualityReport
    published: list[MetricDatum]

    def summary(self) -> dict[str, Any]:
        judged = self.report.judged
        return {
            "run_id": self.run_id,
            "load": self.load.as_dict() if self.load else None,
            "judged": judged.start.isoformat() if judged else None,
            "drops": list(judged.drops) if judged else [],
            "alarm_metric": next((d.value for d in self.published if d.name == QUALITY_DROP_METRIC), None),
            "published": len(self.published),
            "notes": list(self.report.notes),
        }


@dataclass(frozen=True)
class LabelsFile:
    content: bytes
    source_file: str
    outcome_column: str | None = None


def judge_outcomes(
    lake: ClaimsLake,
    baseline: Baseline,
    metrics: MetricsPublisher,
    *,
    endpoint: str,
    run_id: str,
    labels: LabelsFile | None = None,
    bucket: Bucket = "day",
    tolerance: float = DEFAULT_TOLERANCE,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    at: float | None = None,
) -> QualityRun:
    """A labels file (when given) into ``outcomes``, the report over every outcome the lake holds,
    its figures into ``monitoring_metrics`` (kind quality, this run id: a re-run replaces them),
    then the newest judged bucket's metrics published. Nothing is published before the lake holds
    the run's rows, so a failed run leaves no verdict the lake cannot explain."""
    load = None
    if labels is not None:
        load = load_outcomes(lake, labels.content, labels.source_file, labels.outcome_column)
    report = quality_report(lake, baseline, bucket, tolerance, min_positives)
    if load is not None and load.without_prediction:
        report.notes.append(
            f"{load.without_prediction:,} of the {load.claims:,} claims in {load.source_file} have no "
            "captured prediction (not sampled, or scored in the drop folder): kept, not judged"
        )
    write_monitoring(lake, "quality", run_id, quality_rows(report), model_version=baseline.model_version)
    data = quality_metric_data(report, endpoint, at)
    if data:
        metrics.publish(QUALITY_NAMESPACE, data)
    return QualityRun(run_id, load, report, data)


def labels_run_id(content: bytes) -> str:
    """A run over a labels file is named after it: running the same file again replaces its rows."""
    return f"outcomes-{load_id_of(content)}"
