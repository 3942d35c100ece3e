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
progress uses (``.*``, ``~*``, ``*.part``, ``*.tmp``, ``*.partial``, ``*.crdownload``) are not read
while they change, and one left unchanged under such a name for ``in_progress_timeout_s`` is
refused with the reason (so no name waits forever unexplained). A file that changes while it is
being scored is not committed: it settles again and is scored anew.

**What is read.** Only a regular file created in the folder: it is opened without following links
and checked on the open handle (a regular file with one name), and everything read comes from that
handle. A symbolic link, a folder, a FIFO, a device or socket, or a hard link to a file that also
has a name elsewhere is moved to ``failed/`` unread, with the reason; a link's target is never
opened. Names too long for the outputs' names are scored under a shortened name that keeps the
start of the stem and adds the contents' hash.

**Duplicates.** A file whose contents were already scored under another name is a duplicate: it
goes to ``failed/`` with a reason naming the first file and where its scores are
(``WatchSettings.duplicates = "score"`` scores it again instead).

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
import errno
import fcntl
import hashlib
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

from shared.lake import LakeError
from shared.lake_writers import BatchMirror
from shared.ml.batch_scoring import (
    CHUNK_ROWS,
    BatchFileError,
    BatchInvariantError,
    Cancelled,
    FileOutputs,
    input_format,
    score_file,
)

if TYPE_CHECKING:
    from shared.ports import ClaimsLake

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


def in_progress_name(name: str) -> bool:
    """A name a copy in progress or an editor uses: not read while it changes."""
    return name.startswith((".", "~")) or name.lower().endswith(IGNORED_SUFFIXES)


def is_candidate(path: Path) -> bool:
    """An entry the watcher handles now: any name but a copy in progress's (special files included,
    to be refused with their reason)."""
    return not in_progress_name(path.name)


def refusal(entry: os.stat_result) -> str | None:
    """Why an entry of ``incoming/`` (its ``lstat``) is not read, or None for a regular file."""
    mode = entry.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link: only regular files created in incoming/ are read (copy the file in)"
    if stat.S_ISDIR(mode):
        return "a folder: drop files directly into incoming/"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    if entry.st_nlink > 1:
        return (
            f"a hard link to a file with {entry.st_nlink - 1} other name(s) outside incoming/: copy or "
            "move the file in instead"
        )
    return None


class RefusedEntry(Exception):
    """An entry that is not a regular file of its own; the message says what it is."""


def open_dropped_file(path: Path) -> tuple[IO[bytes], os.stat_result]:
    """The file opened for reading without following a link (nor blocking on a FIFO), checked on
    the handle itself, so what is checked is what is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:  # the name is a symbolic link
            raise RefusedEntry(refusal(path.lstat()) or "a symbolic link") from None
        raise
    opened = os.fstat(fd)
    reason = refusal(opened)
    if reason is not None:
        os.close(fd)
        raise RefusedEntry(reason)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), opened


def content_hash(source: IO[bytes]) -> str:
    """SHA-256 of what is left to read in ``source``; the handle is rewound for the next reader."""
    digest = hashlib.sha256()
    while block := source.read(_HASH_BLOCK):
        digest.update(block)
    source.seek(0)
    return digest.hexdigest()


# A file name may take 255 bytes (NAME_MAX on Linux and macOS). Outputs add to the input's name: a
# temporary prefix and hash (22 bytes) and ".json" for the summary; a failed file's note adds
# ".reason.txt"; a second file of one name gets "-<8 hex>".
NAME_MAX_BYTES: Final = 255
OUTPUT_NAME_MAX_BYTES: Final = NAME_MAX_BYTES - len(TEMP_PREFIX) - 13 - len(".json")
MOVED_NAME_MAX_BYTES: Final = NAME_MAX_BYTES - len(".reason.txt")


def fitted_name(name: str, sha256: str, limit: int) -> str:
    """``name`` if it fits in ``limit`` bytes; else its stem cut to fit, then ``-<8 hex>`` and the
    suffix, so two long names with one start stay apart."""
    if len(name.encode()) <= limit:
        return name
    stem, suffix = _split_suffix(name)
    suffix = suffix if len(suffix.encode()) <= 16 else ""
    room = limit - len(suffix.encode()) - 9
    cut = stem.encode()[:room].decode("utf-8", errors="ignore")
    return f"{cut}-{sha256[:8]}{suffix}"


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
        self._db.execute("CREATE INDEX IF NOT EXISTS files_by_contents ON files (sha256)")

    @staticmethod
    def key(name: str, size: int, sha256: str) -> str:
        return json.dumps([name, size, sha256])

    def get(self, key: str) -> LedgerEntry | None:
        row = self._db.execute(f"SELECT {_FIELDS} FROM files WHERE key = ?", (key,)).fetchone()
        return LedgerEntry(*row) if row else None

    def entries(self) -> list[LedgerEntry]:
        return [LedgerEntry(*r) for r in self._db.execute(f"SELECT {_FIELDS} FROM files ORDER BY updated_at")]

    def first_scored_with(self, sha256: str, key: str) -> LedgerEntry | None:
        """The first file scored with these contents under another key (name), if any."""
        row = self._db.execute(
            f"SELECT {_FIELDS} FROM files WHERE sha256 = ? AND key != ? AND state = 'done' "
            "ORDER BY updated_at LIMIT 1",
            (sha256, key),
        ).fetchone()
        return LedgerEntry(*row) if row else None

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
    fitted = fitted_name(name, sha256, MOVED_NAME_MAX_BYTES - 16)  # room for the suffixes below
    target = folder / fitted
    if not os.path.lexists(target):
        return target
    stem, suffix = _split_suffix(fitted)
    candidate = folder / f"{stem}-{sha256[:8]}{suffix}"
    counter = 2
    while os.path.lexists(candidate):  # the same contents twice under one name (a refused duplicate)
        candidate = folder / f"{stem}-{sha256[:8]}-{counter}{suffix}"
        counter += 1
    return candidate


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
                entry = path.lstat()  # never the target of a link
            except FileNotFoundError:
                continue
            present.add(path.name)
            seen = self._seen.get(path.name)
            if seen is None or (seen.size, seen.mtime_ns) != (entry.st_size, entry.st_mtime_ns):
                self._seen[path.name] = _Sighting(entry.st_size, entry.st_mtime_ns, now)
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
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


# ---------------------------------------------------------------------------------------------
# The watcher.


DuplicatePolicy = Literal["refuse", "score"]


@dataclass(frozen=True)
class WatchSettings:
    poll_interval_s: float = 1.0
    settle_s: float = 2.0
    chunk_rows: int = CHUNK_ROWS
    explain: bool = True
    # How long a name a copy in progress uses may sit unchanged before it is refused with the reason.
    in_progress_timeout_s: float = 600.0
    duplicates: DuplicatePolicy = "refuse"  # contents already scored under another name


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
        lake: ClaimsLake | None = None,
    ) -> None:
        self.folder = DropFolder(root)
        self.lake = lake  # scored and rejected rows are mirrored into it, partition = the file's hash
        self.settings = settings
        self.stop_event = stop or threading.Event()
        self._model_dir = model_dir
        self._model: Any = None
        self._model_path: Path | None = None
        self._tracker = SettleTracker(settings.settle_s)
        self._lock: IO[bytes] | None = None
        self._in_progress: dict[str, tuple[tuple[int, int], float]] = {}
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
            pending = []
            for path in self.candidates():
                refused = self._refused_unread(path)
                if refused is None:
                    pending.append(path)
                elif refused.outcome == "failed":
                    results.append(refused)
            results += self._abandoned_copies()
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
            if until_idle and not any(self.folder.incoming.iterdir()):  # copies in progress too
                break
            self.stop_event.wait(self.settings.poll_interval_s)
        return results

    def candidates(self) -> list[Path]:
        return sorted(p for p in self.folder.incoming.iterdir() if is_candidate(p))

    def _refused_unread(self, path: Path) -> FileResult | None:
        """Move an entry that is not a regular file of its own to ``failed/``, unread; None for a
        regular file (a vanished entry is "changed": it is looked at again next time)."""
        try:
            reason = refusal(path.lstat())
        except FileNotFoundError:
            return FileResult(path.name, "changed", "gone before it was read")
        if reason is None:
            return None
        return self._refuse(path, reason, hashlib.sha256(path.name.encode()).hexdigest())

    def _abandoned_copies(self) -> list[FileResult]:
        """Refuse names of copies in progress that have not changed for the timeout."""
        now, refused = time.monotonic(), []
        seen = {p.name for p in self.folder.incoming.iterdir() if in_progress_name(p.name)}
        for name in list(self._in_progress):
            if name not in seen:
                del self._in_progress[name]
        for name in sorted(seen):
            path = self.folder.incoming / name
            try:
                entry = path.lstat()
            except FileNotFoundError:
                continue
            state = (entry.st_size, entry.st_mtime_ns)
            first = self._in_progress.get(name)
            if first is None or first[0] != state:
                self._in_progress[name] = (state, now)
                if first is None:
                    log.info("%s: a copy in progress (by its name); read once renamed", name)
                continue
            if now - first[1] >= self.settings.in_progress_timeout_s:
                del self._in_progress[name]
                reason = (
                    f"its name ({'starts with ' + repr(name[0]) if name[0] in '.~' else 'its suffix'}) "
                    f"is one a copy in progress uses, and it did not change for "
                    f"{self.settings.in_progress_timeout_s:g}s: rename it (no leading '.' or '~', a "
                    f"suffix of .csv, .jsonl, .json or .parquet) to have it scored"
                )
                refused.append(self._refuse(path, reason, hashlib.sha256(name.encode()).hexdigest()))
        return refused

    # -- one file ---------------------------------------------------------------------------

    def process(self, path: Path) -> FileResult | None:
        """Score one settled file (or finish what a crash left). None: no model to score it with."""
        model = self._current_model()
        if model is None:
            return None
        try:
            source, before = open_dropped_file(path)
        except RefusedEntry as refused:
            return self._refuse(path, str(refused), hashlib.sha256(path.name.encode()).hexdigest())
        with source:
            return self._process_open(path, source, before, model)

    def _process_open(self, path: Path, source: IO[bytes], before: os.stat_result, model: Any) -> FileResult:
        sha256 = content_hash(source)
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
        first = self.ledger.first_scored_with(sha256, key) if self.settings.duplicates == "refuse" else None
        if first is not None:
            self.ledger.claim(key, path.name, before.st_size, sha256, path.name)
            reason = (
                f"a duplicate of {first.name}: the same contents were scored at {first.updated_at} into "
                f"scored/{first.output_name}; nothing was scored again"
            )
            return self._fail(path, key, sha256, reason)
        output_name = entry.output_name if entry else self._output_name(path.name, key, sha256)
        entry = self.ledger.claim(key, path.name, before.st_size, sha256, output_name)
        log.info("scoring %s (attempt %d)", path.name, entry.attempts)
        finals = self.folder.outputs(output_name)
        temps = tuple(temporary_name(p, sha256[:12]) for p in finals)
        self._remove(temps)  # left by a crash during an earlier attempt
        mirror = self._mirror(path.name, sha256)
        try:
            summary = score_file(
                model,
                path,
                FileOutputs(scored=temps[0], rejected=temps[1], mirror=mirror),
                explain=self.settings.explain,
                chunk_rows=self.settings.chunk_rows,
                should_stop=self.stop_event.is_set,
                opened=source,
            )
        except Cancelled:
            self._remove(temps, mirror)
            self.ledger.release(key)
            return FileResult(path.name, "stopped")
        except (BatchFileError, BatchInvariantError) as error:
            self._remove(temps, mirror)
            return self._fail(path, key, sha256, str(error))
        except Exception as error:  # a file must never stop the watcher; it goes to failed/ with why
            log.exception("scoring %s failed", path.name)
            self._remove(temps, mirror)
            return self._fail(path, key, sha256, f"{type(error).__name__}: {error}")
        after = os.fstat(source.fileno())
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            self._remove(temps, mirror)
            self.ledger.release(key)
            self._tracker.forget(path)
            return FileResult(path.name, "changed", "the file changed while it was scored; it will be again")
        summary["source_sha256"] = sha256
        if (
            mirror is not None
        ):  # before the files' commit: a crash in between redoes the file, replacing these
            summary["lake"] = self._commit_mirror(mirror, path.name)
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

    def _mirror(self, name: str, sha256: str) -> BatchMirror | None:
        if self.lake is None:
            return None
        try:
            return BatchMirror(self.lake, sha256[:32], name)
        except (LakeError, OSError) as error:  # the lake is a copy: scoring goes on without it
            log.error("%s: the claims lake cannot be written (%s); scoring without it", name, error)
            return None

    @staticmethod
    def _commit_mirror(mirror: BatchMirror, name: str) -> dict[str, Any]:
        try:
            scored, rejected = mirror.commit()
        except (LakeError, OSError) as error:
            log.error("%s: scored, but its rows did not reach the claims lake: %s", name, error)
            mirror.abort()
            return {"error": str(error)}
        return {"batch_id": mirror.batch_id, "batch_scored": scored, "rejected_rows": rejected}

    def _output_name(self, name: str, key: str, sha256: str) -> str:
        fitted = fitted_name(name, sha256, OUTPUT_NAME_MAX_BYTES - 9)
        if not self.ledger.output_name_taken(fitted, key):
            return fitted
        stem, suffix = _split_suffix(fitted)
        return f"{stem}-{sha256[:8]}{suffix}"

    def _fail(self, path: Path, key: str, sha256: str, reason: str) -> FileResult:
        result = self._refuse(path, reason, sha256)
        self.ledger.fail(key, reason)
        return result

    def _refuse(self, path: Path, reason: str, sha256: str) -> FileResult:
        """Move ``path`` itself (never a link's target) to ``failed/`` with ``<name>.reason.txt``."""
        failed = self.folder.folder("failed")
        moved = _move(path, failed, sha256)
        note = moved.with_name(moved.name + ".reason.txt")
        note.write_text(reason + "\n", encoding="utf-8")
        _fsync(note)
        self._tracker.forget(path)
        log.warning("%s refused: %s (moved to %s)", path.name, reason, moved)
        return FileResult(path.name, "failed", reason)

    @staticmethod
    def _remove(paths: tuple[Path, ...], mirror: BatchMirror | None = None) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
        if mirror is not None:
            mirror.abort()

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
