"""`claims-risk up` under load, with its children killed and a model promoted while it serves.

- Chaos: with requests running, each child (the drop folder's watcher while it scores a file, the model
  server, an API process, the alarm sink) is killed with SIGKILL in turn. Each is back within 10 s;
  meanwhile the API answers 503 with Retry-After (never connection refused); the dropped file ends
  with every row scored or rejected, none twice; every restart is a metric for the process alarm.
- Promotion: a new model published while requests run is served within seconds; no request fails,
  each answer names the model that scored it, and the model card agrees.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pytest

from local.dropbox import LEDGER_FILE, Ledger
from local.pipeline_runner import LocalModelStore
from local.servers import free_port
from shared.ml.model import pack_model_dir, unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from shared.schema import EXAMPLE_CLAIM
from tests.e2e.test_local_system import RunningSystem, shutdown, start_up

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun

pytestmark = pytest.mark.slow
BACK_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def system(trained_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    home = tmp_path_factory.mktemp("supervised")
    LocalModelStore(home / "models").publish(trained_run.model_tarball)  # `up` serves it, no training
    environment = {
        "CLAIMS_RISK_THROTTLE_PER_MINUTE": "0",
        "CLAIMS_RISK_API_ENVIRONMENTS": "2",
    }
    previous = {k: os.environ.get(k) for k in environment}
    os.environ.update(environment)
    try:
        running = start_up(home, free_port(), free_port(), home / "up.txt")
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield running
    finally:
        shutdown(running.process)


def children(home: Path) -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = json.loads((home / "run" / "children.json").read_text())
    return loaded


@dataclass
class Outcome:
    at: float
    status: int | str  # an HTTP status, or the exception's name
    retry_after: str | None = None
    model_version: str | None = None


@dataclass
class Load:
    """Clients scoring the example claim over keep-alive connections until stopped."""

    port: int
    token: str
    clients: int = 6
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self) -> None:
        body = json.dumps(EXAMPLE_CLAIM).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            try:
                connection.request("POST", "/api/v1/predict", body, headers)
                response = connection.getresponse()
                payload = response.read()
                version = json.loads(payload).get("model_version") if response.status == 200 else None
                outcome = Outcome(
                    time.monotonic(), response.status, response.getheader("Retry-After"), version
                )
                if response.status == 503:
                    time.sleep(0.05)  # as a client honouring Retry-After would, without waiting the seconds
            except (OSError, http.client.HTTPException) as error:
                outcome = Outcome(time.monotonic(), type(error).__name__)
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.outcomes.append(outcome)


def answers_ping(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def ledger_states(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    ledger = Ledger(path)
    try:
        return [(e.state, e.attempts) for e in ledger.entries()]
    finally:
        ledger.close()


def kill_and_wait(system: RunningSystem, name: str) -> float:
    """SIGKILL the child; seconds until the supervisor runs a new one (and, for the model server, it
    answers /ping)."""
    home = system.output.parent
    before = children(home)[name]["pid"]
    os.kill(before, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < 30:
        now = children(home)[name]
        restarted = now["pid"] != before and now["state"] == "running"
        if restarted and (name != "model server" or answers_ping(system.model_port)):
            return time.monotonic() - killed
        time.sleep(0.05)
    raise AssertionError(f"the {name} was not back within 30 s")


def test_every_child_killed_under_load_is_back_and_nothing_is_lost(system: RunningSystem) -> None:
    home = system.output.parent
    incoming = home / "dropbox" / "incoming"
    rows = 60_000
    staged = write_claims(generate_claims(rows, seed=21), home / "chaos.csv")
    incoming.mkdir(parents=True, exist_ok=True)
    shutil.move(staged, incoming / "chaos.csv")
    ledger_file = home / "dropbox" / LEDGER_FILE
    back: dict[str, float] = {}
    kills: dict[str, float] = {}
    with Load(system.api_port, system.token) as load:
        time.sleep(2)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the watcher is scoring the file: kill it mid-way
            if any(state == "claimed" for state, _ in ledger_states(ledger_file)):
                break
            time.sleep(0.05)
        for name in ("drop-folder watcher", "model server", "API 1", "alarm sink"):
            kills[name] = time.monotonic()
            back[name] = kill_and_wait(system, name)
            time.sleep(1.5)
        time.sleep(2)

    assert all(seconds <= BACK_WITHIN_S for seconds in back.values()), back
    statuses = {o.status for o in load.outcomes}
    assert "ConnectionRefusedError" not in statuses, "clients were refused while a child restarted"
    assert {200, 503} >= {s for s in statuses if isinstance(s, int)}, statuses
    assert all(o.retry_after for o in load.outcomes if o.status == 503), "every 503 says when to retry"
    assert any(o.status == 503 for o in load.outcomes), "the model server's restart was answered with 503"
    # Only requests in flight on the killed API process can see their connection dropped.
    dropped = [o for o in load.outcomes if isinstance(o.status, str)]
    assert all(0 <= o.at - kills["API 1"] < 3 for o in dropped), [
        (o.status, o.at - kills["API 1"]) for o in dropped
    ]
    assert sum(o.status == 200 for o in load.outcomes) > 100

    # The file the watcher was scoring when it died is scored once, every row accounted for.
    summary_file = home / "dropbox" / "summaries" / "chaos.csv.json"
    deadline = time.monotonic() + 180
    while not summary_file.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    summary = json.loads(summary_file.read_text())
    scored = pd.read_csv(home / "dropbox" / "scored" / "chaos.csv", dtype={"claim_id": str})
    rejected = pd.read_csv(home / "dropbox" / "rejected" / "chaos.csv", dtype=str)
    assert summary["rows_in"] == rows == len(scored) + len(rejected)
    assert scored["claim_id"].is_unique and scored["row_number"].is_unique
    assert ledger_states(ledger_file) == [("done", 2)], "killed once, redone once, committed once"

    # Each restart is published for the process alarm, and /health reports every child running.
    restarts = [
        line
        for line in (home / "monitoring" / "metrics.jsonl").read_text().splitlines()
        if "ProcessRestarts" in line
    ]
    assert len(restarts) == 4
    with urlopen_json(f"{system.api}/health", system.token) as health:
        processes = {k: v for k, v in health["dependencies"].items() if k.startswith("process:")}
    expected = {f"process:{name}" for name in children(home)}  # model server, API 1-2, watcher, sink
    assert (
        len(expected) == 5
        and set(processes) == expected
        and all(v.startswith("running") for v in processes.values())
    ), processes
    assert "restarts: 1" in processes["process:model server"]


def test_a_model_promoted_while_serving_is_served_and_named(system: RunningSystem, tmp_path: Path) -> None:
    home = system.output.parent
    store = LocalModelStore(home / "models")
    current = store.current_dir()
    assert current is not None
    old_version = json.loads((current / "manifest.json").read_text())["model_version"]
    # The same model under a new version: what matters here is which one answers.
    unpacked = unpack_model(current / "model.tar.gz", tmp_path / "v2")
    manifest = json.loads((unpacked / "manifest.json").read_text())
    new_version = manifest["model_version"] = f"{old_version}-promoted"
    (unpacked / "manifest.json").write_text(json.dumps(manifest))
    tarball = pack_model_dir(unpacked, tmp_path / "v2.tar.gz")

    with Load(system.api_port, system.token, clients=4) as load:
        time.sleep(2)
        promoted_at = time.monotonic()
        store.publish(tarball)
        card_matched = None
        while time.monotonic() - promoted_at < 20 and card_matched is None:
            with urlopen_json(f"{system.api}/api/v1/models/current", system.token) as card:
                if card["model_version"] == new_version:
                    card_matched = time.monotonic() - promoted_at
            time.sleep(0.1)
        time.sleep(3)

    assert card_matched is not None and card_matched < 5
    assert {o.status for o in load.outcomes} == {200}, "no request failed during the swap"
    versions = [o.model_version for o in load.outcomes]
    assert set(versions) == {old_version, new_version}
    first_new = next(o.at for o in load.outcomes if o.model_version == new_version)
    assert first_new - promoted_at < 5, "the promoted model scores within seconds"
    late_old = [o for o in load.outcomes if o.model_version == old_version and o.at > first_new + 1]
    assert not late_old, "once the new model serves, the old one no longer answers"


class urlopen_json:  # noqa: N801 (used as a context manager, like urlopen)
    def __init__(self, url: str, token: str) -> None:
        host, rest = url.removeprefix("http://").split(":", 1)
        port, path = rest.split("/", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=10)
        self.connection.request("GET", "/" + path, headers={"Authorization": f"Bearer {token}"})

    def __enter__(self) -> dict[str, Any]:
        response = self.connection.getresponse()
        loaded: dict[str, Any] = json.loads(response.read())
        return loaded

    def __exit__(self, *_: object) -> None:
        self.connection.close()
