"""Only regular files created in ``incoming/`` are read: links, pipes, devices, sockets and folders
are refused unread, with the reason; every name is scored or refused; repeats are reported."""

from __future__ import annotations

import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from local.dropbox import (
    MOVED_NAME_MAX_BYTES,
    DropFolderWatcher,
    RefusedEntry,
    WatchSettings,
    open_dropped_file,
)
from shared.ml.synthetic import generate_claims, write_claims

FAST = WatchSettings(poll_interval_s=0.05, settle_s=0.2, in_progress_timeout_s=0.5)
SECRET = "CLM-SECRET-0001,this line belongs to a file outside the drop folder"


def drop_folder(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "dropbox"
    (root / "incoming").mkdir(parents=True)
    return root, root / "incoming"


def watch_until_idle(root: Path, model_dir: Path, settings: WatchSettings = FAST) -> list[tuple[str, str]]:
    """Run the watcher until incoming/ is empty; fails (instead of hanging) after 60 s."""
    results: list[tuple[str, str]] = []
    with DropFolderWatcher(root, lambda: model_dir, settings) as watcher:
        timer = threading.Timer(60, watcher.stop_event.set)
        timer.start()
        try:
            results = [(r.name, r.outcome) for r in watcher.run(until_idle=True)]
        finally:
            timer.cancel()
        assert not watcher.stop_event.is_set(), "the watcher did not finish within 60 s"
    return results


def everything_written(root: Path) -> str:
    texts = []
    for folder in ("scored", "rejected", "summaries"):
        texts += [p.read_text(errors="replace") for p in (root / folder).iterdir() if p.is_file()]
    return "\n".join(texts)


def reason_for(root: Path, name: str) -> str:
    return (root / "failed" / f"{name}.reason.txt").read_text()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    secret = tmp_path / "elsewhere" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text(f"claim_id,description\n{SECRET}\n")
    return secret


def test_links_pipes_sockets_and_folders_are_refused_unread(
    model_dir: Path, tmp_path: Path, secret_file: Path
) -> None:
    root, incoming = drop_folder(tmp_path)
    (incoming / "link.csv").symlink_to(secret_file)
    (incoming / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    (incoming / "folder-link.csv").symlink_to(secret_file.parent, target_is_directory=True)
    os.link(secret_file, incoming / "hardlink.csv")
    os.mkfifo(incoming / "pipe.csv")
    (incoming / "folder.csv").mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(incoming / "socket.csv"))
    write_claims(generate_claims(50, seed=1), incoming / "good.csv")
    try:
        outcomes = dict(watch_until_idle(root, model_dir))
    finally:
        server.close()

    assert outcomes.pop("good.csv") == "scored", "one hostile entry never stops the others"
    assert set(outcomes.values()) == {"failed"}
    assert "symbolic link" in reason_for(root, "link.csv")
    assert "symbolic link" in reason_for(root, "dangling.csv")
    assert "symbolic link" in reason_for(root, "folder-link.csv")
    assert "hard link" in reason_for(root, "hardlink.csv")
    assert "named pipe" in reason_for(root, "pipe.csv")
    assert "folder" in reason_for(root, "folder.csv")
    assert "socket" in reason_for(root, "socket.csv")
    # Nothing of the target reached an output, the links moved as links, the target is untouched.
    assert "SECRET" not in everything_written(root)
    assert (root / "failed" / "link.csv").is_symlink()
    assert secret_file.read_text().endswith(f"{SECRET}\n")
    assert not any(incoming.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_a_device_node_is_refused(model_dir: Path, tmp_path: Path) -> None:
    root, incoming = drop_folder(tmp_path)
    os.mknod(incoming / "null.csv", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert watch_until_idle(root, model_dir) == [("null.csv", "failed")]
    assert "device" in reason_for(root, "null.csv")


def test_the_checked_file_is_the_file_read(tmp_path: Path, secret_file: Path) -> None:
    """A name swapped for a link after the folder was listed is caught on the open handle itself."""
    link = tmp_path / "swapped.csv"
    link.symlink_to(secret_file)
    with pytest.raises(RefusedEntry, match="symbolic link"):
        open_dropped_file(link)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    with pytest.raises(RefusedEntry, match="named pipe"):
        open_dropped_file(fifo)  # opened without blocking, then refused
    plain = tmp_path / "plain.csv"
    plain.write_text("claim_id\n")
    opened, status = open_dropped_file(plain)
    with opened:
        assert opened.read() == b"claim_id\n" and stat.S_ISREG(status.st_mode)


def test_every_name_is_scored_or_refused_with_its_reason(model_dir: Path, tmp_path: Path) -> None:
    root, incoming = drop_folder(tmp_path)
    long_name = "x" * (255 - len(".csv")) + ".csv"  # the longest name the file system allows
    write_claims(generate_claims(30, seed=2), incoming / long_name)
    write_claims(generate_claims(30, seed=3), incoming / "..hidden.csv")
    (incoming / "~lock.csv").write_text("claim_id\n")
    (incoming / "notes.txt").write_text("not claims")
    (incoming / ("y" * 251 + ".txt")).write_text("not claims either, under a long name")

    outcomes = dict(watch_until_idle(root, model_dir))

    assert outcomes[long_name] == "scored"
    [scored] = list((root / "scored").iterdir())
    assert scored.name.startswith("xxxx") and len(scored.name.encode()) < 255
    assert len((root / "scored" / scored.name).read_text().splitlines()) == 31
    assert "copy in progress" in reason_for(root, "..hidden.csv")
    assert "copy in progress" in reason_for(root, "~lock.csv")
    assert "must end with" in reason_for(root, "notes.txt")
    [long_failed] = [
        p for p in (root / "failed").iterdir() if p.name.startswith("yyyy") and "reason" in p.name
    ]
    assert "must end with" in long_failed.read_text()
    assert all(
        len(p.name.encode()) <= MOVED_NAME_MAX_BYTES + len(".reason.txt") for p in (root / "failed").iterdir()
    )
    assert not any(incoming.iterdir()), "no name stays in incoming/ unexplained"


def test_the_same_contents_under_another_name_is_reported_not_scored_twice(
    model_dir: Path, tmp_path: Path
) -> None:
    root, incoming = drop_folder(tmp_path)
    first = write_claims(generate_claims(40, seed=4), incoming / "monday.csv")
    assert watch_until_idle(root, model_dir) == [("monday.csv", "scored")]
    (incoming / "monday-again.csv").write_bytes((root / "processed" / "monday.csv").read_bytes())
    assert not first.exists()

    assert watch_until_idle(root, model_dir) == [("monday-again.csv", "failed")]
    reason = reason_for(root, "monday-again.csv")
    assert "duplicate of monday.csv" in reason and "scored/monday.csv" in reason
    assert [p.name for p in (root / "scored").iterdir()] == ["monday.csv"]

    # Configurable: an operator who wants repeats scored gets them scored.
    (incoming / "monday-third.csv").write_bytes((root / "processed" / "monday.csv").read_bytes())
    rescoring = WatchSettings(poll_interval_s=0.05, settle_s=0.2, duplicates="score")
    assert watch_until_idle(root, model_dir, rescoring) == [("monday-third.csv", "scored")]
