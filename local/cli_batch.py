"""``claims-risk batch``: score claims files, from the drop folder (``watch``) or on demand (``score``).

``local/cli.py`` registers the group (``main.add_command(batch)``); ``python -m local.cli_batch``
runs it alone, which is how :func:`local.dropbox.start_watcher` starts the watcher beside the servers.
The scoring itself is :mod:`shared.ml.batch_scoring`; the drop folder's rules are in :mod:`local.dropbox`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from local.dropbox import (
    DropFolderWatcher,
    WatcherBusy,
    WatchSettings,
    commit,
    default_folder,
    published_model,
    start_watcher,
    stop_on_signals,
    temporary_name,
)
from shared.ml.batch_scoring import CHUNK_ROWS, BatchFileError, BatchInvariantError, FileOutputs

__all__ = ["batch", "start_watcher"]


def _home() -> Path:
    # The same data folder as local.cli.home(), without importing local.cli (which imports this module).
    return Path(os.environ.get("CLAIMS_RISK_HOME", "data")).resolve()


def _model_dir_option(function: Any) -> Any:
    return click.option(
        "--model-dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="an unpacked model artifact (default: the published model in <home>/models)",
    )(function)


def _chunk_rows_option(function: Any) -> Any:
    return click.option(
        "--chunk-rows",
        type=click.IntRange(min=1),
        default=CHUNK_ROWS,
        show_default=True,
        help="rows read and scored together; bounds memory",
    )(function)


@click.group(help="Score claims files: CSV, JSON Lines or Parquet.")
def batch() -> None:
    pass


@batch.command(help="Watch the drop folder and score each new file in incoming/ (Ctrl-C stops).")
@click.option(
    "--folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="the drop folder (default: <home>/dropbox)",
)
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True)
@click.option(
    "--settle-seconds",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="a file is read once its size and time have not changed for this long",
)
@click.option(
    "--in-progress-timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="seconds a name a copy in progress uses (.*, ~*, *.part, ...) may sit unchanged before it is "
    "refused with the reason",
)
@click.option(
    "--duplicates",
    type=click.Choice(["refuse", "score"]),
    default="refuse",
    envvar="CLAIMS_RISK_DROPBOX_DUPLICATES",
    show_default=True,
    help="contents already scored under another name: refuse (to failed/, naming the first file) or "
    "score again",
)
@click.option("--once", is_flag=True, help="score what is in incoming/ (once it settles), then exit")
@click.option("--no-explain", is_flag=True, help="scores only, without risk factors (faster)")
@_model_dir_option
@_chunk_rows_option
def watch(
    folder: Path | None,
    poll_interval: float,
    settle_seconds: float,
    in_progress_timeout: float,
    duplicates: str,
    once: bool,
    no_explain: bool,
    model_dir: Path | None,
    chunk_rows: int,
) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    root = (folder or default_folder(_home())).resolve()
    settings = WatchSettings(
        poll_interval,
        settle_seconds,
        chunk_rows,
        explain=not no_explain,
        in_progress_timeout_s=in_progress_timeout,
        duplicates="score" if duplicates == "score" else "refuse",
    )
    model_source = (lambda: model_dir) if model_dir else published_model(_home())
    if once and model_source() is None:  # waiting for a model would never end
        raise click.ClickException("no published model: run `claims-risk train` first, or pass --model-dir")
    stop = threading.Event()
    from local.cli_lake import open_lake

    lake = open_lake(_home())  # the scored and rejected rows are mirrored into the claims lake
    try:
        with stop_on_signals(stop), DropFolderWatcher(root, model_source, settings, stop, lake) as watcher:
            click.echo(f"watching {watcher.folder.incoming} (every {poll_interval:g}s)", err=True)
            results = watcher.run(until_idle=once)
    except WatcherBusy as busy:
        raise click.ClickException(str(busy)) from None
    failed = [r for r in results if r.outcome == "failed"]
    if once:
        click.echo(f"{len(results) - len(failed)} file(s) handled, {len(failed)} failed", err=True)


@batch.command(help="Score one file now, into <out>/<stem>.scored<ext>, .rejected<ext> and .summary.json.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="output folder (default: the file's folder)",
)
@click.option("--no-explain", is_flag=True, help="scores only, without risk factors (faster)")
@_model_dir_option
@_chunk_rows_option
def score(file: Path, out: Path | None, no_explain: bool, model_dir: Path | None, chunk_rows: int) -> None:
    from shared.ml.batch_scoring import score_file
    from shared.ml.model import RiskModel

    location = model_dir or published_model(_home())()
    if location is None:
        raise click.ClickException("no published model: run `claims-risk train` first, or pass --model-dir")
    target = out or file.parent
    target.mkdir(parents=True, exist_ok=True)
    stem, suffix = file.stem, file.suffix
    finals = (
        target / f"{stem}.scored{suffix}",
        target / f"{stem}.rejected{suffix}",
        target / f"{stem}.summary.json",
    )
    temps = tuple(temporary_name(p, str(os.getpid())) for p in finals)
    try:
        summary = score_file(
            RiskModel.load(location),
            file,
            FileOutputs(scored=temps[0], rejected=temps[1]),
            explain=not no_explain,
            chunk_rows=chunk_rows,
        )
        temps[2].write_text(json.dumps(summary, indent=2), encoding="utf-8")
        commit(temps, finals)
    except (BatchFileError, BatchInvariantError) as error:
        raise click.ClickException(f"{file.name} cannot be scored: {error}") from None
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    click.echo(
        f"{summary['rows_in']:,} rows: {summary['scored']:,} scored → {finals[0]}, "
        f"{summary['rejected']:,} rejected → {finals[1]} ({summary['seconds']:.1f}s, "
        f"{summary['claims_per_second']:,.0f} claims/s)"
    )


if __name__ == "__main__":
    batch()
