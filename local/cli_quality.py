"""``claims-risk monitor quality``: outcomes that arrived later, joined to the captured predictions.

The capture is flattened into the lake's ``inferences``, the labels file goes into its ``outcomes``
table (a file loaded again replaces its own rows; a file none of whose claims was captured is
refused), and the join runs in the lake's SQL: every outcome the lake holds counts, each claim once
with its latest prediction and its latest outcome. The same sequence runs in AWS when a labels file
lands under ``outcomes/incoming/`` (:func:`shared.ml.quality.judge_outcomes`).

Prints precision, recall and FNR (at the model's threshold) and ROC-AUC and PR-AUC per day or week
against the model's test metrics, publishes the newest judged bucket's figures to the local metrics
(``<home>/monitoring/metrics.jsonl``, as the AWS job publishes them to CloudWatch), and evaluates
the ``model-quality`` alarm of :mod:`shared.alarms` over them as CloudWatch would (alarms.jsonl, the
console and the on-call webhook, as the other local alarms). Exit 3 while it is in ALARM, so a
scheduled run can act on it.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click
from rich.console import Console
from rich.table import Table

from local.cli_monitor import capture_option
from shared.ml.quality import (
    DEFAULT_MIN_POSITIVES,
    DEFAULT_TOLERANCE,
    QUALITY_ALARM,
    Bucket,
    LabelsFile,
    QualityReport,
    QualityRun,
    baseline_from_manifest,
    judge_outcomes,
)

if TYPE_CHECKING:
    from shared.alarm_evaluation import Evaluation

EXIT_QUALITY_ALARM: Final = 3
QUALITY_ALARM_KEY: Final = QUALITY_ALARM.key
console = Console(highlight=False)


def clock() -> float:
    """Now, in seconds since the epoch: when this run's figures are published (tests move it)."""
    return time.time()


def _home() -> Path:
    return Path(os.environ.get("CLAIMS_RISK_HOME", "data")).resolve()


def _manifest_path(model_dir: Path | None, home: Path) -> Path:
    if model_dir is not None:
        return model_dir / "manifest.json"
    from local.pipeline_runner import LocalModelStore

    current = LocalModelStore(home / "models").current_dir()
    if current is None:
        raise click.UsageError("no published model under <home>/models: pass --model-dir")
    return current / "manifest.json"


def _run_id(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _rate(value: float | None, baseline: float | None) -> str:
    if value is None:
        return "n/a"
    if baseline is None:
        return f"{value:.3f}"
    delta = value - baseline
    return f"{value:.3f} ({delta:+.3f})"


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print(report: QualityReport) -> None:
    base = report.baseline
    table = Table(
        title=f"Model quality per {report.bucket} (baseline: {base.model_version} {base.split} "
        f"precision {base.precision:.3f}, recall {base.recall:.3f}, FNR {base.false_negative_rate:.3f}, "
        f"ROC-AUC {_figure(base.roc_auc)}, PR-AUC {_figure(base.pr_auc)})"
    )
    columns = ("from", "labelled", "high risk", "flagged", "precision", "recall", "FNR", "ROC-AUC", "PR-AUC")
    for name in (*columns, "drop"):
        table.add_column(name, justify="left" if name in {"from", "drop"} else "right")
    for b in report.buckets:
        m = b.metrics
        ranking = b.ranking
        table.add_row(
            b.start.isoformat(),
            str(m.labelled),
            str(m.positives),
            str(m.flagged),
            _rate(m.precision, base.precision),
            _rate(m.recall, base.recall),
            _rate(m.false_negative_rate, base.false_negative_rate),
            _rate(ranking.roc_auc if ranking else None, base.roc_auc),
            _rate(ranking.pr_auc if ranking else None, base.pr_auc),
            "; ".join(b.drops) if b.drops else ("" if m.positives >= report.min_positives else "too few"),
            style="red" if b.drops else None,
        )
    console.print(table)
    if report.labels_without_prediction:
        console.print(
            f"{report.labels_without_prediction} labelled claims have no captured prediction "
            "(not sampled, or scored elsewhere)"
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")


def judge_alarm(home: Path, run: QualityRun, endpoint: str, at: float, *, quiet: bool = False) -> Evaluation:
    """The ``model-quality`` alarm evaluated over the local metrics as CloudWatch evaluates the AWS
    one (its definition in shared/alarms.py), and its state set: a transition goes to alarms.jsonl,
    the console and the on-call webhook like any local alarm's."""
    from local.alarm_sink import alarm_sink_from_env, instance_name
    from shared.alarm_evaluation import INITIAL_STATE, Datapoint, evaluate

    sink = alarm_sink_from_env(home, console=None if quiet else console.print)
    definition, dimensions = QUALITY_ALARM, {"Endpoint": endpoint}
    name = instance_name(definition, dimensions)
    points = [
        Datapoint(m.timestamp, m.value)
        for m in sink.metrics.read()
        if (m.namespace, m.name, m.dimensions) == (definition.namespace, definition.metric, dimensions)
    ]
    current = sink.states().get(name, {}).get("state", INITIAL_STATE)
    # CloudWatch judges a datum once it has landed: a second after this run's.
    evaluation = evaluate(definition, points, at + 1.0, current)
    report, judged = run.report, run.report.judged
    if judged is None:
        what = f"no {report.bucket} with enough labels to judge: the last verdict stands"
    else:
        found = "; ".join(judged.drops) or "within tolerance of the baseline"
        what = f"{report.bucket} of {judged.start}: {found}"
    extra = {}
    if judged is not None:
        start = judged.start.isoformat()
        extra["quality"] = next(b for b in report.as_dict()["buckets"] if b["start"] == start)
    sink.set_state(
        name,
        definition.key,
        dimensions,
        evaluation.state,
        f"{what}. {evaluation.reason}",
        description=definition.description,
        now=at,
        extra=extra,
    )
    return evaluation


@click.command(
    "quality",
    help="Load outcomes (CSV: claim_id, outcome) into the lake and join them to the captured predictions; "
    "precision, recall, FNR, ROC-AUC and PR-AUC "
    f"per day or week against the model's test metrics, and the model-quality alarm. Exit "
    f"{EXIT_QUALITY_ALARM} while that alarm is in ALARM (or, with --tolerance, when the newest judged "
    "bucket dropped).",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with claim_id and the outcome (1/0, true/false, high/low), added to the lake's outcomes; "
    "without it, the outcomes the lake already holds",
)
@capture_option
@click.option("--bucket", type=click.Choice(["day", "week"]), default="day", show_default=True)
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="model whose manifest holds the baseline (default: the published one)",
)
@click.option("--outcome-column", default=None, help="the outcome's column (default: found by name)")
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0, max=1),
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="how far below the baseline a rate may fall in this report (default: the model-quality "
    "alarm's threshold, which the alarm keeps)",
)
@click.option(
    "--min-positives",
    type=click.IntRange(min=1),
    default=DEFAULT_MIN_POSITIVES,
    show_default=True,
    help="high-risk (or flagged) claims a bucket needs to be judged",
)
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def quality(
    labels: Path | None,
    capture: Path | None,
    bucket: Bucket,
    model_dir: Path | None,
    outcome_column: str | None,
    tolerance: float,
    min_positives: int,
    as_json: bool,
) -> None:
    from local.cli_lake import open_lake, sync_capture
    from shared.adapters.metrics import LocalMetricsSink
    from shared.lake import LakeError

    home = _home()
    endpoint = os.environ.get("CLAIMS_RISK_ENDPOINT", "claims-risk")
    at = clock()
    try:
        manifest = json.loads(_manifest_path(model_dir, home).read_text(encoding="utf-8"))
        baseline = baseline_from_manifest(manifest)
        lake = open_lake(home)
        # The capture first: a labels file is checked against the predictions the lake holds.
        sync_capture(home, lake, capture)
        run = judge_outcomes(
            lake,
            baseline,
            LocalMetricsSink(home / "monitoring" / "metrics.jsonl"),  # what the alarm sink reads
            endpoint=endpoint,
            run_id=_run_id(at),
            labels=None if labels is None else LabelsFile(labels.read_bytes(), labels.name, outcome_column),
            bucket=bucket,
            tolerance=tolerance,
            min_positives=min_positives,
            at=at,
        )
    except (ValueError, OSError, LakeError) as error:
        raise click.ClickException(str(error)) from error
    report = run.report
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print(report)
    evaluation = judge_alarm(home, run, endpoint, at, quiet=as_json)
    if not as_json:
        if tolerance != DEFAULT_TOLERANCE:
            console.print(
                f"[yellow]note:[/] the {QUALITY_ALARM.key} alarm judges at its own threshold "
                f"({QUALITY_ALARM.threshold:g}, shared/alarms.py), as in AWS; --tolerance {tolerance:g} "
                "changes this report's drops and the exit code only"
            )
        elif evaluation.state == "ALARM" and report.judged is None:
            console.print(
                f"[yellow]note:[/] {QUALITY_ALARM.key} stays in ALARM: no {report.bucket} could be judged "
                "this time, so the last verdict stands"
            )
        elif evaluation.state == "ALARM" and not report.alarm:
            console.print(
                f"[yellow]note:[/] {QUALITY_ALARM.key} stays in ALARM: it takes the worst run of the "
                f"last {QUALITY_ALARM.period_s} s (as CloudWatch's Maximum does), and an earlier run in "
                "that minute dropped; the next run after it decides"
            )
    if report.alarm or (tolerance == DEFAULT_TOLERANCE and evaluation.state == "ALARM"):
        raise SystemExit(EXIT_QUALITY_ALARM)
