"""No tracked symbolic link may point outside the repository: a clone elsewhere would follow it into
whatever that path holds on the cloning machine (a `train` link into /tmp was once committed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tracked_links() -> dict[str, str]:
    """Each tracked symlink's path and target, as git stores them (mode 120000)."""
    listing = subprocess.run(
        ["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    links = {}
    for line in listing:
        meta, path = line.split("\t", 1)
        mode, blob, _ = meta.split()
        if mode == "120000":
            target = subprocess.run(
                ["git", "cat-file", "blob", blob], cwd=REPO, capture_output=True, text=True, check=True
            ).stdout
            links[path] = target
    return links


def leaves_repository(path: str, target: str) -> bool:
    resolved = Path(os.path.normpath(REPO / Path(path).parent / target))
    return Path(target).is_absolute() or not resolved.is_relative_to(REPO)


def test_no_tracked_link_leaves_the_repository() -> None:
    leaving = {p: t for p, t in tracked_links().items() if leaves_repository(p, t)}
    assert not leaving, f"symlinks pointing outside the repository: {leaving}"


def test_the_check_sees_a_link_out() -> None:
    assert leaves_repository("train", "/tmp/feat/input/train")
    assert leaves_repository("a/b", "../../../etc/passwd")
    assert not leaves_repository("a/b", "../README.md")
