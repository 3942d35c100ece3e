"""The local drop folder: nothing lost, each file scored exactly once, even across a SIGKILL."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from local.dropbox import LEDGER_FILE, TEMP_PREFIX, DropFolderWatcher, Ledger, WatchSettings
from local.jobs import REPO_ROOT
from shared.ml.synthetic import generate_claims, write_claims

FAST = WatchSettings(poll_interval_s=0.05, settle_s=0.3)
CORRUPT_EVERY = 20  # 5% of the rows
CORRUPTIONS = ("bad_type", "missing_required", "broken_quoting", "extra_column", "not_utf8")


def claims_csv(path: Path, rows: int, seed: int = 3) -> Path:
    return write_claims(generate_claims(rows, seed=seed), path)


def corrupt(source: Path, target: Path) -> dict[int, str]:
    """Damage every 20th data row, cycling through the kinds of damage; returns row number → kind."""
    header, *lines = source.read_bytes().splitlines()
    columns = header.decode().split(",")
    amount, claim_type = columns.index("claim_amount"), columns.index("claim_type")
    damaged: dict[int, str] = {}
    for index in range(CORRUPT_EVERY - 1, len(lines), CORRUPT_EVERY):
        kind = CORRUPTIONS[(index // CORRUPT_EVERY) % len(CORRUPTIONS)]
        cells = next(csv.reader([lines[index].decode()]))
        if kind == "bad_type":
            cells[amount] = "twelve hundred"
        elif kind == "missing_required":
            cells[claim_type] = ""
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(cells)
        line = out.getvalue().encode()
        if kind == "broken_quoting":
            line = b'"' + line
        elif kind == "extra_column":
            line += b",surplus"
        elif kind == "not_utf8":
            line += b"\xff\xfe"
        lines[index] = line
        damaged[index + 1] = kind
    target.write_bytes(b"\n".join([header, *lines]) + b"\n")
    return damaged


def watch_once(root: Path, model_dir: Path, settings: WatchSettings = FAST) -> list[str]:
    with DropFolderWatcher(root, lambda: model_dir, settings) as watcher:
        return [r.outcome for r in watcher.run(until_idle=True)]


def ledger_entries(root: Path) -> list[tuple[str, str, int]]:
    ledger = Ledger(root / LEDGER_FILE)
    try:
        return [(e.name, e.state, e.attempts) for e in ledger.entries()]
    finally:
        ledger.close()


def test_nothing_is_lost_in_100k_rows_with_5_percent_corrupt(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "dropbox"
    damaged = corrupt(claims_csv(tmp_path / "clean.csv", 100_000), tmp_path / "claims.csv")
    (root / "incoming").mkdir(parents=True)
    shutil.move(tmp_path / "claims.csv", root / "incoming" / "claims.csv")

    assert watch_once(root, model_dir) == ["scored"]

    scored = pd.read_csv(root / "scored" / "claims.csv", dtype={"claim_id": str})
    rejected = pd.read_csv(root / "rejected" / "claims.csv", dtype=str, keep_default_na=False)
    summary = json.loads((root / "summaries" / "claims.csv.json").read_text())
    assert len(scored) + len(rejected) == 100_000
    assert (summary["rows_in"], summary["scored"], summary["rejected"]) == (
        100_000,
        len(scored),
        len(rejected),
    )
    assert set(rejected["row_number"].astype(int)) == set(damaged), "exactly the damaged rows are rejected"
    assert (rejected["reason"].str.len() > 0).all()
    by_kind = dict(zip(rejected["row_number"].astype(int), rejected["reason"], strict=True))
    expected_words = {
        "bad_type": "claim_amount",
        "missing_required": "claim_type: missing",
        "broken_quoting": "quoting",
        "extra_column": "extra column",
        "not_utf8": "not UTF-8",
    }
    for row, kind in damaged.items():
        assert expected_words[kind] in by_kind[row], (row, kind, by_kind[row])
    assert scored["claim_id"].is_unique and scored["risk_factors"].str.startswith("[{").all()
    assert (root / "processed" / "claims.csv").is_file() and not any((root / "incoming").iterdir())


def test_a_watcher_killed_mid_file_scores_it_exactly_once_after_restart(
    model_dir: Path, tmp_path: Path
) -> None:
    root, rows = tmp_path / "dropbox", 40_000
    (root / "incoming").mkdir(parents=True)
    claims_csv(tmp_path / "claims.csv", rows).rename(root / "incoming" / "claims.csv")
    command = [sys.executable, "-m", "local.cli_batch", "watch", "--folder", str(root)]
    command += ["--model-dir", str(model_dir), "--poll-interval", "0.05", "--settle-seconds", "0.2"]
    command += ["--chunk-rows", "500"]  # many small chunks, so the kill lands mid-file
    log = (tmp_path / "watcher.log").open("wb")
    watcher = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=log)
    try:
        partial = root / "scored" / f"{TEMP_PREFIX}placeholder"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and watcher.poll() is None:
            partials = list((root / "scored").glob(f"{TEMP_PREFIX}*")) if (root / "scored").is_dir() else []
            if partials and partials[0].stat().st_size > 10_000:
                partial = partials[0]
                break
            time.sleep(0.02)
        assert partial.exists(), "the watcher never started writing: see watcher.log"
        os.kill(watcher.pid, signal.SIGKILL)
        watcher.wait(timeout=10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
        log.close()

    assert not (root / "scored" / "claims.csv").exists(), "no partial output under the final name"
    assert ledger_entries(root) == [("claims.csv", "claimed", 1)]

    restarted = subprocess.run(
        [*command, "--once"], check=False, cwd=REPO_ROOT, capture_output=True, timeout=300
    )
    assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]

    scored = pd.read_csv(root / "scored" / "claims.csv", dtype={"claim_id": str})
    rejected = pd.read_csv(root / "rejected" / "claims.csv", dtype=str)
    assert len(scored) + len(rejected) == rows
    assert scored["claim_id"].is_unique and scored["row_number"].is_unique
    assert ledger_entries(root) == [("claims.csv", "done", 2)]
    assert not list((root / "scored").glob(f"{TEMP_PREFIX}*"))
    assert (root / "processed" / "claims.csv").is_file()


def test_a_file_copied_slowly_is_read_only_once_complete(model_dir: Path, tmp_path: Path) -> None:
    root, rows = tmp_path / "dropbox", 3_000
    source = claims_csv(tmp_path / "claims.csv", rows).read_bytes()
    settings = WatchSettings(poll_interval_s=0.05, settle_s=1.0)
    watcher = DropFolderWatcher(root, lambda: model_dir, settings)
    results: list[str] = []

    def watch() -> None:
        with watcher:
            results.extend(r.outcome for r in watcher.run())

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        target = root / "incoming" / "claims.csv"
        pieces = 8
        with target.open("wb") as copy:  # a copy in pieces, pausing well below the settle interval
            for i in range(pieces):
                copy.write(source[i * len(source) // pieces : (i + 1) * len(source) // pieces])
                copy.flush()
                time.sleep(0.4)
        deadline = time.monotonic() + 60
        while not (root / "summaries" / "claims.csv.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watcher.stop_event.set()
        thread.join(timeout=60)

    assert results == ["scored"], "read once, after the copy finished"
    summary = json.loads((root / "summaries" / "claims.csv.json").read_text())
    assert (summary["rows_in"], summary["rejected"]) == (rows, 0)
    assert ledger_entries(root) == [("claims.csv", "done", 1)]


def test_files_that_cannot_be_scored_go_to_failed_with_the_reason(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "dropbox"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "notes.txt").write_text("not claims")
    (incoming / "broken.parquet").write_bytes(b"PAR1 but not really")
    pd.DataFrame({"claim_id": ["CLM-1"], "claim_type": ["auto"]}).to_csv(incoming / "short.csv", index=False)
    (incoming / "copying.csv.part").write_text("claim_id\n")  # a copy in progress, then abandoned

    abandoned_after = WatchSettings(poll_interval_s=0.05, settle_s=0.3, in_progress_timeout_s=1.5)
    assert sorted(watch_once(root, model_dir, abandoned_after)) == ["failed"] * 4

    reasons = {p.name: p.read_text() for p in (root / "failed").glob("*.reason.txt")}
    assert "must end with" in reasons["notes.txt.reason.txt"]
    assert "Parquet" in reasons["broken.parquet.reason.txt"]
    assert "claim_amount" in reasons["short.csv.reason.txt"]
    assert "copy in progress" in reasons["copying.csv.part.reason.txt"]
    assert {"notes.txt", "broken.parquet", "short.csv"} <= {p.name for p in (root / "failed").iterdir()}
    assert not any(incoming.iterdir())
    assert not any((root / "scored").iterdir())


def test_a_file_scored_once_is_not_scored_again(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "dropbox"
    (root / "incoming").mkdir(parents=True)
    original = claims_csv(tmp_path / "claims.csv", 500)
    shutil.copy(original, root / "incoming" / "claims.csv")
    assert watch_once(root, model_dir) == ["scored"]
    first = (root / "scored" / "claims.csv").stat().st_mtime_ns

    shutil.copy(original, root / "incoming" / "claims.csv")  # the same file dropped again
    assert watch_once(root, model_dir) == ["already_scored"]
    assert (root / "scored" / "claims.csv").stat().st_mtime_ns == first
    assert ledger_entries(root) == [("claims.csv", "done", 1)]

    # A different file under the same name is scored, beside the first one's outputs.
    claims_csv(root / "incoming" / "claims.csv", 200, seed=9)
    assert watch_once(root, model_dir) == ["scored"]
    assert len(list((root / "scored").iterdir())) == 2
    assert len(pd.read_csv(root / "scored" / "claims.csv")) == 500
