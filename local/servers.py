"""Starting and stopping the local servers as child processes, and waiting until they answer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from local.jobs import REPO_ROOT


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


def start_model_server(
    model_dir: Path | None,
    host: str,
    port: int,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``env`` adds to this process's environment: the data folder for captures and metrics, say.
    ``model_dir`` None: the published model of the data folder, followed as new ones are promoted."""
    where = ["--model-dir", str(model_dir)] if model_dir is not None else []
    return _start(["serve-model", *where, "--host", host, "--port", str(port)], log_file, env)


def start_api_server(
    model_url: str, host: str, port: int, log_file: Path | None = None
) -> subprocess.Popen[bytes]:
    return _start(["serve-api", "--model-url", model_url, "--host", host, "--port", str(port)], log_file)


def _start(
    args: list[str], log_file: Path | None, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    out = log_file.open("ab") if log_file else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "local.cli", *args],
        cwd=REPO_ROOT,
        stdout=out,
        stderr=out,
        env={**os.environ, **env} if env else None,
    )


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
