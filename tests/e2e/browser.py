"""Headless Chromium for the browser tests: Debian's chromium, driven by Playwright (no download)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import REPO_ROOT

SCREENSHOT_DIR = REPO_ROOT / "test-output"


def chromium() -> str:
    for candidate in (
        os.environ.get("CLAIMS_RISK_CHROMIUM"),
        "chromium",
        "chromium-browser",
        "google-chrome",
    ):
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.skip("no Chromium on this machine: `make test` installs it with apt-get when run as root")
