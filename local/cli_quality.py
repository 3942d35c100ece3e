"""``claims-risk monitor quality``: outcomes that arrived later, joined to the captured predictions.

Prints precision, recall and FNR per day or week against the model's test metrics, and sets the
``model-quality`` alarm (alarms.jsonl, the console and the on-call webhook, as the other local alarms)
when the newest bucket with enough labels fell below them. Exit 3 while it is in ALARM, so a scheduled
run can act on it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

import click
from rich.console import Console
from rich.table import Table

from local.cli_monitor import capture_option
from shared.ml.quality import (
    DEFAULT_MIN_POSITIVES,
    DEFAULT_TOLERANCE,
    Bucket,
    QualityReport,
    baseline_from_manifest,
    predictions_from_capture,
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
    help="Join outcomes (CSV: claim_id, outcome) to the captured predictions; precision, recall and FNR "
    f"per day or week against the model's test metrics. Exit {EXIT_QUALITY_ALARM} when the newest "
    "judged bucket dropped.",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="CSV with claim_id and the outcome (1/0, true/false, high/low)",
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
    labels: Path,
    capture: Path | None,
    bucket: Bucket,
    model_dir: Path | None,
    outcome_column: str | None,
    tolerance: float,
    min_positives: int,
    as_json: bool,
) -> None:
    from local.alarm_sink import PREFIX, alarm_sink_from_env

    home = _home()
    try:
        truth = read_labels(labels.read_text(encoding="utf-8"), outcome_column)
        manifest = json.loads(_manifest_path(model_dir, home).read_text(encoding="utf-8"))
        baseline = baseline_from_manifest(manifest)
    except (ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    root = capture or home / "capture"
    report = quality_report(predictions_from_capture(root), truth, baseline, bucket, tolerance, min_positives)
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
