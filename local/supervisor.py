"""Keeping the children of ``claims-risk up`` running: the model server, the API, the drop folder's
watcher and the alarm sink, each its own process.

A child that exits unasked is started again after a backoff (0.5 s, doubling to 8 s while it keeps
crashing). Each restart is logged, written to ``<home>/run/children.json`` (what the API's
``/health`` reports) and published as the ``ProcessRestarts`` metric, on which the alarm sink's
``process-restarts`` alarm pages on-call (:data:`shared.alarms.LOCAL_ALARMS`). A child that crashes
:data:`CRASH_LOOP_RESTARTS` times within :data:`CRASH_LOOP_WINDOW_S` is in a crash loop: the
supervisor gives up on it with a clear message, and ``up`` stops.

The API's listening socket belongs to the supervisor and is handed to each API process it starts, so
while the API restarts, clients wait in the socket's queue instead of being refused. The model
server's port is its own: while it is down, the API answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from local.auth import SHARED_THROTTLE_ENV
from local.jobs import REPO_ROOT
from local.servers import stop as stop_process
from shared.adapters.metrics import LocalMetricsSink
from shared.alarms import PROCESS_RESTARTS_METRIC, RUNTIME_NAMESPACE
from shared.ports import MetricDatum

log = logging.getLogger("claims_risk.supervisor")

BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 8.0
CRASH_LOOP_RESTARTS: Final = 5
CRASH_LOOP_WINDOW_S: Final = 60.0
STATUS_FILE: Final = "run/children.json"
SUPERVISED_ENV: Final = "CLAIMS_RISK_SUPERVISED"  # set in each child's environment
LISTEN_BACKLOG: Final = 1024

ChildState = Literal["starting", "running", "restarting", "gave up", "stopped"]


@dataclass(frozen=True)
class ChildSpec:
    name: str
    args: Sequence[str]  # after ``python -m``
    log_file: Path
    ready_url: str | None = None  # answered 200 once the child serves
    env: Mapping[str, str] = field(default_factory=dict)
    pass_fds: tuple[int, ...] = ()
    ready_timeout_s: float = 120.0


@dataclass
class Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    state: ChildState = "starting"
    restarts: int = 0
    recent_exits: collections.deque[float] = field(default_factory=collections.deque)
    restart_at: float | None = None
    last_exit: str = ""
    since: str = ""


class CrashLoop(RuntimeError):
    """A child kept crashing; the message names it, how often, and its log."""


class NotReady(RuntimeError):
    """A child did not answer within its timeout when first started."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket the API processes inherit (so it outlives each of them)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ChildSpec],
        home: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] = print,
        backoff_first_s: float = BACKOFF_FIRST_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        crash_loop_restarts: int = CRASH_LOOP_RESTARTS,
        crash_loop_window_s: float = CRASH_LOOP_WINDOW_S,
    ) -> None:
        self.backoff_first_s, self.backoff_max_s = backoff_first_s, backoff_max_s
        self.crash_loop_restarts, self.crash_loop_window_s = crash_loop_restarts, crash_loop_window_s
        self.children = [Child(spec) for spec in specs]
        self.home, self.clock, self.say = home, clock, say
        self.status_file = home / STATUS_FILE
        self.metrics = LocalMetricsSink(home / "monitoring" / "metrics.jsonl")
        self._stopping = False

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every child in order, each ready before the next (the API needs the model server)."""
        for child in self.children:
            self._spawn(child)
            if child.spec.ready_url:
                self._wait_ready(child)
            child.state = "running"
        self.write_status()

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stopping = True
        for child in reversed(self.children):
            if child.process is not None:
                stop_process(child.process, timeout_s)
            child.state = "stopped"
        self.write_status()

    def pid(self, name: str) -> int | None:
        for child in self.children:
            if child.spec.name == name and child.process is not None:
                return child.process.pid
        return None

    # -- watching -------------------------------------------------------------------------------

    def check(self) -> None:
        """One look at every child: note exits, restart those whose backoff is over. Raises
        :class:`CrashLoop` when a child keeps crashing."""
        now, changed = self.clock(), False
        for child in self.children:
            process = child.process
            if child.state in ("running", "starting") and process is not None and process.poll() is not None:
                self._exited(child, process.returncode, now)
                changed = True
            if child.state == "restarting" and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
                child.state = "running"
                changed = True
        if changed:
            self.write_status()

    def _exited(self, child: Child, code: int, now: float) -> None:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        child.last_exit = how
        window = child.recent_exits
        window.append(now)
        while window and now - window[0] > self.crash_loop_window_s:
            window.popleft()
        if len(window) > self.crash_loop_restarts:
            child.state = "gave up"
            self.write_status()
            raise CrashLoop(
                f"the {child.spec.name} stopped {len(window)} times within {self.crash_loop_window_s:.0f}s "
                f"(last: {how}); giving up. See {child.spec.log_file}"
            )
        delay = min(self.backoff_max_s, self.backoff_first_s * 2 ** (len(window) - 1))
        child.state, child.restart_at = "restarting", now + delay
        child.restarts += 1
        self.say(f"[supervisor] the {child.spec.name} stopped ({how}); restarting in {delay:g}s")
        log.warning("%s stopped (%s); restart %d in %.1fs", child.spec.name, how, child.restarts, delay)
        self._publish_restart(child)

    def _publish_restart(self, child: Child) -> None:
        datum = MetricDatum(PROCESS_RESTARTS_METRIC, 1.0, {"Process": child.spec.name}, "Count", time.time())
        try:
            self.metrics.publish(RUNTIME_NAMESPACE, [datum])
        except OSError:
            log.exception("the restart metric could not be written")

    def _spawn(self, child: Child) -> None:
        spec = child.spec
        spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_file.open("ab") as out:  # the child keeps its own descriptor
            child.process = subprocess.Popen(
                [sys.executable, "-m", *spec.args],
                cwd=REPO_ROOT,
                stdout=out,
                stderr=out,
                env={**os.environ, SUPERVISED_ENV: "1", **spec.env},
                pass_fds=spec.pass_fds,
            )
        child.since = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        child.restart_at = None

    def _wait_ready(self, child: Child) -> None:
        assert child.spec.ready_url is not None and child.process is not None
        deadline = time.monotonic() + child.spec.ready_timeout_s
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                code = child.process.returncode
                raise NotReady(f"the {child.spec.name} exited with code {code}; see {child.spec.log_file}")
            try:
                with urllib.request.urlopen(child.spec.ready_url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise NotReady(f"the {child.spec.name} did not answer within {child.spec.ready_timeout_s:.0f}s")

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, object]]:
        return {
            child.spec.name: {
                "state": child.state,
                "pid": child.process.pid if child.process is not None else None,
                "restarts": child.restarts,
                "since": child.since,
                "last_exit": child.last_exit,
            }
            for child in self.children
        }

    def write_status(self) -> None:
        """Atomically: a reader (the API's /health) never sees half a file."""
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.status_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.status(), indent=2), encoding="utf-8")
        temporary.replace(self.status_file)


def run_until_stopped(supervisor: Supervisor, interval_s: float = 0.2) -> None:
    """Check the children until SIGINT or SIGTERM; stops them all on the way out (also on a crash loop)."""

    def on_signal(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        while True:
            supervisor.check()
            time.sleep(interval_s)
    finally:
        signal.signal(signal.SIGTERM, previous)
        supervisor.stop()


class SupervisedProcesses:
    """:class:`shared.ports.RuntimeProcesses` from the supervisor's status file (the API's /health)."""

    def __init__(self, home: Path) -> None:
        self.status_file = home / STATUS_FILE

    def states(self) -> dict[str, str]:
        try:
            status = json.loads(self.status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {
            name: f"{entry.get('state')} (restarts: {entry.get('restarts', 0)})"
            for name, entry in status.items()
            if isinstance(entry, dict)
        }


def supervised_children(
    home: Path,
    host: str,
    model_port: int,
    api_fd: int,
    api_url: str,
    logs: Path,
    api_environments: int = 1,
) -> list[ChildSpec]:
    """What ``claims-risk up`` runs, in start order: the model server (following the published model,
    so a promotion is served), ``api_environments`` API processes on the supervisor's socket (each
    one Lambda execution environment: one invocation at a time, so several run side by side, with
    one throttle allowance per client across them), the drop folder's watcher and the alarm sink."""
    env = {"CLAIMS_RISK_HOME": str(home)}
    model_url = f"http://{host}:{model_port}"
    apis = [
        ChildSpec(
            f"API {number}" if api_environments > 1 else "API",
            ["local.cli", "serve-api", "--model-url", model_url, "--fd", str(api_fd)],
            logs / (f"api-{number}.log" if api_environments > 1 else "api.log"),
            f"{api_url}/health" if number == 1 else None,  # the socket's queue reaches whichever is ready
            {**env, SHARED_THROTTLE_ENV: "1"},
            pass_fds=(api_fd,),
        )
        for number in range(1, api_environments + 1)
    ]
    return [
        ChildSpec(
            "model server",
            ["local.cli", "serve-model", "--host", host, "--port", str(model_port)],
            logs / "model_server.log",
            f"{model_url}/ping",
            env,
        ),
        *apis,
        ChildSpec(
            "drop-folder watcher",
            ["local.cli_batch", "watch", "--folder", str(home / "dropbox")],
            logs / "dropbox.log",
            None,
            env,
        ),
        ChildSpec("alarm sink", ["local.cli", "monitor", "alarms"], logs / "alarms.log", None, env),
    ]
