"""``claims-risk monitor quality``: outcomes that arrived later, joined to the captured predictions.

The labels file goes into the claims lake's ``outcomes`` table (a file loaded again replaces its own
rows), the capture is flattened into ``inferences``, and the join runs in the lake's SQL: every
outcome the lake holds counts, each claim once with its latest prediction and its latest outcome.

Prints precision, recall and FNR per day or week against the model's test metrics, and sets the
``model-quality`` alarm (alarms.jsonl, the console and the on-call webhook, as the other local alarms)
when the newest bucket with enough labels fell below them. Exit 3 while it is in ALARM, so a scheduled
run can act on it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import click
from rich.console import Console
from rich.table import Table

from local.cli_monitor import capture_option
from shared.lake_writers import MetricRow
from shared.ml.quality import (
    DEFAULT_MIN_POSITIVES,
    DEFAULT_TOLERANCE,
    Bucket,
    QualityReport,
    baseline_from_manifest,
    quality_report,
    read_labels,
)

EXIT_QUALITY_ALARM: Final = 3
QUALITY_ALARM_KEY: Final = "model-quality"
console = Console(highlight=False)


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


def _run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def quality_rows(report: QualityReport) -> list[MetricRow]:
    """Each bucket's figures as the lake's monitoring rows, its window the bucket's days."""
    days = 7 if report.bucket == "week" else 1
    rows = []
    for b in report.buckets:
        start = datetime.combine(b.start, datetime.min.time(), UTC)
        window = (start, start + timedelta(days=days))
        m = b.metrics
        base = report.baseline
        figures = (
            ("labelled", m.labelled, None),
            ("precision", m.precision, base.precision - report.tolerance),
            ("recall", m.recall, base.recall - report.tolerance),
            ("false_negative_rate", m.false_negative_rate, None),
        )
        for name, value, floor in figures:
            violated = (
                bool(b.drops) and name in ("precision", "recall") and any(d.startswith(name) for d in b.drops)
            )
            rows.append(MetricRow(name, None if value is None else float(value), "", floor, violated, window))
    return rows


def _rate(value: float | None, baseline: float) -> str:
    if value is None:
        return "n/a"
    delta = value - baseline
    return f"{value:.3f} ({delta:+.3f})"


def _print(report: QualityReport) -> None:
    base = report.baseline
    table = Table(
        title=f"Model quality per {report.bucket} (baseline: {base.model_version} {base.split} "
        f"precision {base.precision:.3f}, recall {base.recall:.3f}, FNR {base.false_negative_rate:.3f})"
    )
    for name in ("from", "labelled", "high risk", "flagged", "precision", "recall", "FNR", "drop"):
        table.add_column(name, justify="left" if name in {"from", "drop"} else "right")
    for b in report.buckets:
        m = b.metrics
        table.add_row(
            b.start.isoformat(),
            str(m.labelled),
            str(m.positives),
            str(m.flagged),
            _rate(m.precision, base.precision),
            _rate(m.recall, base.recall),
            _rate(m.false_negative_rate, base.false_negative_rate),
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


@click.command(
    "quality",
    help="Load outcomes (CSV: claim_id, outcome) into the lake and join them to the captured predictions; "
    "precision, recall and FNR "
    f"per day or week against the model's test metrics. Exit {EXIT_QUALITY_ALARM} when the newest "
    "judged bucket dropped.",
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
    help="how far below the baseline a rate may fall",
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
    from local.alarm_sink import PREFIX, alarm_sink_from_env
    from local.cli_lake import open_lake, sync_capture
    from shared.lake import LakeError
    from shared.lake_writers import write_monitoring, write_outcomes

    home = _home()
    try:
        manifest = json.loads(_manifest_path(model_dir, home).read_text(encoding="utf-8"))
        baseline = baseline_from_manifest(manifest)
        lake = open_lake(home)
        if labels is not None:
            content = labels.read_bytes()
            truth = read_labels(content.decode("utf-8"), outcome_column)
            write_outcomes(lake, truth, content, labels.name)
        sync_capture(home, lake, capture)
        report = quality_report(lake, baseline, bucket, tolerance, min_positives)
        write_monitoring(
            lake, "quality", _run_id(), quality_rows(report), model_version=baseline.model_version
        )
    except (ValueError, OSError, LakeError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print(report)
    if report.judged is not None:
        endpoint = os.environ.get("CLAIMS_RISK_ENDPOINT", "claims-risk")
        sink = alarm_sink_from_env(home, console=None if as_json else console.print)
        sink.set_state(
            f"{PREFIX}-{QUALITY_ALARM_KEY}[Endpoint={endpoint}]",
            QUALITY_ALARM_KEY,
            {"Endpoint": endpoint},
            "ALARM" if report.alarm else "OK",
            f"{report.bucket} of {report.judged.start}: "
            + ("; ".join(report.judged.drops) or "within tolerance of the baseline"),
            description="precision or recall on labelled claims fell below the model's test metrics",
            extra={
                "quality": next(
                    b for b in report.as_dict()["buckets"] if b["start"] == report.judged.start.isoformat()
                )
            },
        )
    if report.alarm:
        raise SystemExit(EXIT_QUALITY_ALARM)
