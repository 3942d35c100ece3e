"""``claims-risk monitor``: monitoring jobs on demand over the local capture.

``monitor run`` runs the drift job (the program Model Monitor runs hourly in AWS) over what the local
model server captured. The group is registered in :mod:`local.cli`; other monitoring commands join it
with ``@monitor.command()``.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import click


def _home() -> Path:
    return Path(os.environ.get("CLAIMS_RISK_HOME", "data")).resolve()


def serving_model_dir(home: Path) -> Path:
    """The folder of the model the local server serves: ``<home>/models/current.json`` names it."""
    models = home / "models"
    pointer = models / "current.json"
    try:
        version = str(json.loads(pointer.read_text(encoding="utf-8"))["model_version"])
    except (OSError, ValueError, KeyError) as error:
        raise click.ClickException(
            f"no serving model in {models} (train one with `claims-risk up`, or give --model-dir)"
        ) from error
    return models / version


@click.group(help="Monitoring of the served model: drift of its traffic against its training data.")
def monitor() -> None:
    pass


# The local data capture, read by every monitor command.
capture_option = click.option(
    "--capture",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="data capture folder; default <home>/capture",
)


@monitor.command("run", help="Run the drift job now over the local data capture.")
@capture_option
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="model folder (its baseline is the reference); default the serving model",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="report folder; default <home>/monitoring/reports/<timestamp>/",
)
@click.option("--since", default=None, help="window start, ISO 8601 (UTC unless a zone is given)")
@click.option("--until", default=None, help="window end, ISO 8601, exclusive")
@click.option("--endpoint", default=None, help="the metrics' Endpoint dimension; default the capture's")
@click.option(
    "--source",
    type=click.Choice(["capture", "lake"]),
    default="capture",
    show_default=True,
    help="read the window from the capture files, or from the claims lake's inferences",
)
def run(
    capture: Path | None,
    model_dir: Path | None,
    out: Path | None,
    since: str | None,
    until: str | None,
    endpoint: str | None,
    source: Literal["capture", "lake"],
) -> None:
    from dataclasses import replace

    from local.cli_lake import open_lake
    from sagemaker_jobs.monitoring import drift
    from shared.adapters.metrics import LocalMetricsSink

    home = _home()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    argv = [
        "--capture",
        str(capture or home / "capture"),
        "--model-dir",
        str(model_dir or serving_model_dir(home)),
        "--out",
        str(out or home / "monitoring" / "reports" / stamp),
    ]
    for option, value in (("--since", since), ("--until", until), ("--endpoint", endpoint)):
        if value:
            argv += [option, value]
    # The local sink of this home, whatever the environment says: the local alarms read it.
    metrics = LocalMetricsSink(home / "monitoring" / "metrics.jsonl")
    try:
        # The run's capture hours and figures go to this home's lake (or the one the environment names).
        config = replace(drift.config_from(argv, {}), lake=open_lake(home), source=source)
        report = drift.run(config, metrics)
    except drift.DriftJobError as error:
        raise click.ClickException(str(error)) from error
    verdict = (
        click.style(f"ALARM: {', '.join(report.alarms())}", fg="red")
        if report.alarmed
        else click.style("no drift alarm", fg="green")
    )
    click.echo(f"{report.claims:,} claims, {report.scored:,} scores: {verdict}")
    if report.drifted_features:
        click.echo(f"drifted features: {', '.join(report.drifted_features)}")
    if report.features_missing_more:
        click.echo(f"missing more often: {', '.join(report.features_missing_more)}")
    click.echo(f"report: {config.output / drift.REPORT_HTML}")


@monitor.command(
    "alarms", help="Evaluate the alarms every --interval seconds until stopped (what `claims-risk up` runs)."
)
@click.option("--interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
def alarms(interval: float) -> None:
    import signal
    import threading

    from local.alarm_sink import AlarmLoop, alarm_sink_from_env

    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    loop = AlarmLoop(alarm_sink_from_env(_home()), interval).start()
    click.echo(f"evaluating the alarms every {interval:g}s", err=True)
    stopped.wait()
    loop.stop()
