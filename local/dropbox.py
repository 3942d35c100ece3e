"""The local drop folder: the stand-in for the S3 prefix that batch transform jobs score.

Layout under the folder (``<home>/dropbox`` unless configured)::

    incoming/     files to score (.csv, .jsonl, .json read as lines, .parquet)
    scored/       <name>: one line per scored claim (same format family as the input)
    rejected/     <name>: each rejected row with its row number, claim id, reason and raw text
    summaries/    <name>.json: counts, score distribution, seconds, model version
    processed/    inputs that were scored, moved out of incoming/
    failed/       inputs that could not be scored at all, with <name>.reason.txt
    .ledger.sqlite3   which files were scored (name + size + SHA-256 of the contents)
    .watcher.lock     held by the one watcher that works on the folder

**When a file is read.** The watcher polls ``incoming/``. A file is complete when its size and
modification time have not changed for the settle interval and it can be opened; names a copy in
progress uses (``.*``, ``~*``, ``*.part``, ``*.tmp``, ``*.partial``, ``*.crdownload``) are never read.
A file that changes while it is being scored is not committed: it settles again and is scored anew.

**Exactly once.** The ledger (SQLite, durable on commit) keys a file by name, size and content hash.
Scoring a file is a claim/commit protocol:

1. claim: the ledger records the file as ``claimed`` (with the attempt count);
2. outputs are written under hidden temporary names in their target folders, then fsynced;
3. commit: each is renamed over its final name (atomic), the summary last; then the ledger marks the
   file ``done``, and the input moves to ``processed/``.

A watcher killed at any point leaves no partial output under a final name. On restart a ``claimed``
file is redone from the start: its temporary files are deleted, and its outputs replace any earlier
ones whole (never appended), so no row appears twice. A file already ``done`` (a crash before the
move, or the same file dropped again) is only moved to ``processed/``. A file whose scoring was
interrupted :data:`MAX_ATTEMPTS` times (say the process is killed for memory each time) goes to
``failed/`` instead of looping. A graceful stop (SIGTERM, :meth:`WatcherHandle.stop`) abandons the
file in hand between chunks and releases its claim without counting an attempt.

**Names.** Outputs keep the input's name. When a different file with the same name was scored
before, the new outputs (and the moved input) get ``-<first 8 hex of its hash>`` before the suffix,
so nothing earlier is overwritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

from shared.ml.batch_scoring import (
    CHUNK_ROWS,
    BatchFileError,
    BatchInvariantError,
    Cancelled,
    FileOutputs,
    input_format,
    score_file,
)

log = logging.getLogger("claims_risk.dropbox")

FOLDERS: Final = ("incoming", "scored", "rejected", "summaries", "processed", "failed")
LEDGER_FILE: Final = ".ledger.sqlite3"
LOCK_FILE: Final = ".watcher.lock"
TEMP_PREFIX: Final = ".partial-"
MAX_ATTEMPTS: Final = 3
IGNORED_SUFFIXES: Final = (".part", ".tmp", ".partial", ".crdownload", ".swp", ".reason.txt")
_HASH_BLOCK: Final = 1 << 20

FileState = Literal["claimed", "done", "failed"]


def default_folder(home: Path) -> Path:
    return home / "dropbox"


@dataclass(frozen=True)
class DropFolder:
    root: Path

    def __post_init__(self) -> None:
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    def folder(self, name: str) -> Path:
        return self.root / name

    def outputs(self, output_name: str) -> tuple[Path, Path, Path]:
        """Final paths of the scored rows, the rejected rows and the summary."""
        return (
            self.root / "scored" / output_name,
            self.root / "rejected" / output_name,
            self.root / "summaries" / f"{output_name}.json",
        )


def is_candidate(path: Path) -> bool:
    """A regular file whose name is not one a copy in progress or an editor uses."""
    name = path.name
    if name.startswith((".", "~")) or name.lower().endswith(IGNORED_SUFFIXES):
        return False
    return path.is_file()


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The ledger.


@dataclass(frozen=True)
class LedgerEntry:
    key: str
    name: str
    size: int
    sha256: str
    state: FileState
    attempts: int
    output_name: str
    reason: str
    updated_at: str


class Ledger:
    """Which files were claimed, scored or failed; one SQLite file beside the folders."""

    def __init__(self, path: Path) -> None:
        # One connection per thread of use; the watcher uses it from one thread only.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut, not just a kill
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "size INTEGER NOT NULL, sha256 TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, "
            "output_name TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL)"
        )

    @staticmethod
    def key(name: str, size: int, sha256: str) -> str:
        return json.dumps([name, size, sha256])

    def get(self, key: str) -> LedgerEntry | None:
        row = self._db.execute(f"SELECT {_FIELDS} FROM files WHERE key = ?", (key,)).fetchone()
        return LedgerEntry(*row) if row else None

    def entries(self) -> list[LedgerEntry]:
        return [LedgerEntry(*r) for r in self._db.execute(f"SELECT {_FIELDS} FROM files ORDER BY updated_at")]

    def output_name_taken(self, output_name: str, key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM files WHERE output_name = ? AND key != ? LIMIT 1", (output_name, key)
        ).fetchone()
        return row is not None

    def claim(self, key: str, name: str, size: int, sha256: str, output_name: str) -> LedgerEntry:
        self._db.execute(
            "INSERT INTO files (key, name, size, sha256, state, attempts, output_name, updated_at) "
            "VALUES (?, ?, ?, ?, 'claimed', 1, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET state = 'claimed', attempts = attempts + 1, updated_at = ?",
            (key, name, size, sha256, output_name, _now(), _now()),
        )
        entry = self.get(key)
        assert entry is not None
        return entry

    def release(self, key: str) -> None:
        """Undo a claim after a graceful stop: the attempt does not count."""
        self._db.execute(
            "UPDATE files SET attempts = attempts - 1 WHERE key = ? AND state = 'claimed'", (key,)
        )

    def finish(self, key: str) -> None:
        self._set(key, "done", "")

    def fail(self, key: str, reason: str) -> None:
        self._set(key, "failed", reason)

    def _set(self, key: str, state: FileState, reason: str) -> None:
        self._db.execute(
            "UPDATE files SET state = ?, reason = ?, updated_at = ? WHERE key = ?",
            (state, reason, _now(), key),
        )

    def close(self) -> None:
        self._db.close()


_FIELDS: Final = "key, name, size, sha256, state, attempts, output_name, reason, updated_at"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# Files on disk: durable writes and moves.


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(final: Path, tag: str) -> Path:
    """A hidden name in the final's folder (same file system, so the rename is atomic)."""
    return final.with_name(f"{TEMP_PREFIX}{tag}-{final.name}")


def commit(temps: tuple[Path, ...], finals: tuple[Path, ...]) -> None:
    """Make finished outputs visible: fsync each, rename it over its final name (the last one last,
    so a summary written last says the set is whole), then fsync the folders."""
    for temp in temps:
        _fsync(temp)
    for temp, final in zip(temps, finals, strict=True):
        temp.replace(final)
    for folder in {final.parent for final in finals}:
        _fsync(folder)


def _free_name(folder: Path, name: str, sha256: str) -> Path:
    target = folder / name
    if not target.exists():
        return target
    stem, suffix = _split_suffix(name)
    return folder / f"{stem}-{sha256[:8]}{suffix}"


def _split_suffix(name: str) -> tuple[str, str]:
    path = Path(name)
    return path.stem, path.suffix


def _move(source: Path, folder: Path, sha256: str) -> Path:
    target = _free_name(folder, source.name, sha256)
    source.rename(target)
    _fsync(folder)
    return target


# ---------------------------------------------------------------------------------------------
# Settling: a file is read only once it has stopped changing.


@dataclass
class _Sighting:
    size: int
    mtime_ns: int
    since: float


@dataclass
class SettleTracker:
    settle_s: float
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, _Sighting] = field(default_factory=dict)

    def settled(self, paths: list[Path]) -> list[Path]:
        """The paths unchanged for ``settle_s`` that can be opened; others are (re)timed from now."""
        now, ready = self.clock(), []
        present = set()
        for path in paths:
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            present.add(path.name)
            seen = self._seen.get(path.name)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._seen[path.name] = _Sighting(stat.st_size, stat.st_mtime_ns, now)
                continue
            if now - seen.since >= self.settle_s and _can_open(path):
                ready.append(path)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return ready

    def forget(self, path: Path) -> None:
        self._seen.pop(path.name, None)


def _can_open(path: Path) -> bool:
    try:
        with path.open("rb"):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The watcher.


@dataclass(frozen=True)
class WatchSettings:
    poll_interval_s: float = 1.0
    settle_s: float = 2.0
    chunk_rows: int = CHUNK_ROWS
    explain: bool = True


@dataclass(frozen=True)
class FileResult:
    name: str
    outcome: Literal["scored", "already_scored", "failed", "changed", "stopped"]
    detail: str = ""
    summary: dict[str, Any] | None = None


class WatcherBusy(RuntimeError):
    """Another watcher holds the folder's lock."""


class DropFolderWatcher:
    """Scores files that settle in ``incoming/``. ``model_dir`` says where the current model is (None
    when none is published yet); it is asked before each file, so a newly promoted model is used."""

    def __init__(
        self,
        root: Path,
        model_dir: Callable[[], Path | None],
        settings: WatchSettings = WatchSettings(),
        stop: threading.Event | None = None,
    ) -> None:
        self.folder = DropFolder(root)
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self._model_dir = model_dir
        self._model: Any = None
        self._model_path: Path | None = None
        self._tracker = SettleTracker(settings.settle_s)
        self._lock: IO[bytes] | None = None
        self.ledger = Ledger(root / LEDGER_FILE)

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> DropFolderWatcher:
        lock = (self.folder.root / LOCK_FILE).open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise WatcherBusy(f"another watcher is working on {self.folder.root}") from None
        self._lock = lock  # the kernel drops the lock when the process dies, even by SIGKILL
        for name in ("scored", "rejected", "summaries"):  # a killed run's temporary outputs
            for temp in self.folder.folder(name).glob(f"{TEMP_PREFIX}*"):
                temp.unlink(missing_ok=True)
        return self

    def __exit__(self, *_: object) -> None:
        self.ledger.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def run(self, *, until_idle: bool = False) -> list[FileResult]:
        """Poll until stopped; with ``until_idle``, return once every file in ``incoming/`` is handled."""
        results: list[FileResult] = []
        while not self.stop_event.is_set():
            pending = self.candidates()
            for path in self._tracker.settled(pending):
                if self.stop_event.is_set():
                    break
                try:
                    result = self.process(path)
                except OSError as error:  # moved or deleted by someone else meanwhile: look again later
                    log.warning("%s: %s", path.name, error)
                    self._tracker.forget(path)
                    continue
                if result is not None:
                    results.append(result)
            if until_idle and not self.candidates():
                break
            self.stop_event.wait(self.settings.poll_interval_s)
        return results

    def candidates(self) -> list[Path]:
        return sorted(p for p in self.folder.incoming.iterdir() if is_candidate(p))

    # -- one file ---------------------------------------------------------------------------

    def process(self, path: Path) -> FileResult | None:
        """Score one settled file (or finish what a crash left). None: no model to score it with."""
        model = self._current_model()
        if model is None:
            return None
        before = path.stat()
        sha256 = content_hash(path)
        key = Ledger.key(path.name, before.st_size, sha256)
        entry = self.ledger.get(key)
        if entry is not None and entry.state == "done":
            moved = _move(path, self.folder.folder("processed"), sha256)
            log.info("%s was already scored (%s); moved to %s", path.name, entry.updated_at, moved)
            return FileResult(path.name, "already_scored", str(moved))
        if entry is not None and entry.state == "failed":
            return self._fail(path, key, sha256, entry.reason)
        if entry is not None and entry.attempts >= MAX_ATTEMPTS:
            reason = f"scoring was interrupted {entry.attempts} times (the process died while scoring it)"
            return self._fail(path, key, sha256, reason)
        try:
            input_format(path)
        except BatchFileError as error:
            self.ledger.claim(key, path.name, before.st_size, sha256, path.name)
            return self._fail(path, key, sha256, str(error))
        output_name = entry.output_name if entry else self._output_name(path.name, key, sha256)
        entry = self.ledger.claim(key, path.name, before.st_size, sha256, output_name)
        log.info("scoring %s (attempt %d)", path.name, entry.attempts)
        finals = self.folder.outputs(output_name)
        temps = tuple(temporary_name(p, sha256[:12]) for p in finals)
        self._remove(temps)  # left by a crash during an earlier attempt
        try:
            summary = score_file(
                model,
                path,
                FileOutputs(scored=temps[0], rejected=temps[1]),
                explain=self.settings.explain,
                chunk_rows=self.settings.chunk_rows,
                should_stop=self.stop_event.is_set,
            )
        except Cancelled:
            self._remove(temps)
            self.ledger.release(key)
            return FileResult(path.name, "stopped")
        except (BatchFileError, BatchInvariantError) as error:
            self._remove(temps)
            return self._fail(path, key, sha256, str(error))
        except Exception as error:  # a file must never stop the watcher; it goes to failed/ with why
            log.exception("scoring %s failed", path.name)
            self._remove(temps)
            return self._fail(path, key, sha256, f"{type(error).__name__}: {error}")
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            self._remove(temps)
            self.ledger.release(key)
            self._tracker.forget(path)
            return FileResult(path.name, "changed", "the file changed while it was scored; it will be again")
        summary["source_sha256"] = sha256
        temps[2].write_text(json.dumps(summary, indent=2), encoding="utf-8")
        commit(temps, finals)
        self.ledger.finish(key)
        moved = _move(path, self.folder.folder("processed"), sha256)
        log.info(
            "%s: %d rows, %d scored, %d rejected in %.1fs → %s",
            path.name,
            summary["rows_in"],
            summary["scored"],
            summary["rejected"],
            summary["seconds"],
            finals[0],
        )
        return FileResult(path.name, "scored", str(moved), summary)

    def _output_name(self, name: str, key: str, sha256: str) -> str:
        if not self.ledger.output_name_taken(name, key):
            return name
        stem, suffix = _split_suffix(name)
        return f"{stem}-{sha256[:8]}{suffix}"

    def _fail(self, path: Path, key: str, sha256: str, reason: str) -> FileResult:
        failed = self.folder.folder("failed")
        moved = _move(path, failed, sha256)
        note = moved.with_name(moved.name + ".reason.txt")
        note.write_text(reason + "\n", encoding="utf-8")
        _fsync(note)
        self.ledger.fail(key, reason)
        log.warning("%s failed: %s (moved to %s)", path.name, reason, moved)
        return FileResult(path.name, "failed", reason)

    @staticmethod
    def _remove(paths: tuple[Path, ...]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def _current_model(self) -> Any:
        model_path = self._model_dir()
        if model_path is None:
            log.warning("no published model yet: files wait in %s", self.folder.incoming)
            return None
        if model_path != self._model_path:
            from shared.ml.model import RiskModel

            self._model, self._model_path = RiskModel.load(model_path), model_path
            log.info("scoring with model %s", self._model.version)
        return self._model


def published_model(home: Path) -> Callable[[], Path | None]:
    """The model ``claims-risk up`` serves: ``<home>/models/current.json``."""
    from local.pipeline_runner import LocalModelStore

    store = LocalModelStore(home / "models")
    return store.current_dir


# ---------------------------------------------------------------------------------------------
# Running the watcher beside the servers (``claims-risk up``).


@dataclass
class WatcherHandle:
    """A watcher in its own process: :meth:`stop` asks it to stop (SIGTERM) and waits."""

    process: subprocess.Popen[bytes]
    folder: Path
    log_file: Path | None

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # it stops between chunks; the file is redone later
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_watcher(
    home: Path, folder: Path | None = None, log_file: Path | None = None, extra_args: list[str] | None = None
) -> WatcherHandle:
    """Start ``claims-risk batch watch`` on ``<home>/dropbox`` in a child process; logs to
    ``<home>/logs/dropbox.log`` unless ``log_file`` says otherwise."""
    from local.jobs import REPO_ROOT

    root = folder or default_folder(home)
    target = log_file or home / "logs" / "dropbox.log"
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "local.cli_batch", "watch", "--folder", str(root), *(extra_args or [])]
    env = {**os.environ, "CLAIMS_RISK_HOME": str(home)}
    with target.open("ab") as out:  # the child keeps its own descriptor
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=out)
    return WatcherHandle(process, root, target)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (the watcher then stops between chunks) instead of killing."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    for signum in previous:
        signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
