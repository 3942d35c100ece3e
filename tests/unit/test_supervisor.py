"""The supervisor of `claims-risk up`: a crashed child is restarted with backoff, logged, counted and
published for the process alarm; a crash loop ends with a clear message."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from local.alarm_sink import AlarmSink
from local.supervisor import ChildSpec, CrashLoop, SupervisedProcesses, Supervisor


def spec(tmp_path: Path, name: str, code: str) -> ChildSpec:
    # ``python -m`` runs a module; the test's children are tiny modules written here.
    module = tmp_path / f"child_{name.replace(' ', '_')}.py"
    module.write_text(code)
    return ChildSpec(name, [module.stem], tmp_path / f"{module.stem}.log", env={"PYTHONPATH": str(tmp_path)})


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_killed_child_is_restarted_counted_and_reported(tmp_path: Path) -> None:
    said: list[str] = []
    child = spec(tmp_path, "worker", "import time\ntime.sleep(60)\n")
    supervisor = Supervisor([child], tmp_path, say=said.append, backoff_first_s=0.05)
    supervisor.start()
    try:
        first = supervisor.pid("worker")
        assert first is not None
        os.kill(first, signal.SIGKILL)

        def restarted() -> bool:
            supervisor.check()
            return supervisor.pid("worker") != first

        wait_for(restarted)
        status = json.loads((tmp_path / "run" / "children.json").read_text())["worker"]
        assert status["state"] == "running" and status["restarts"] == 1
        assert status["last_exit"] == "killed by signal 9"
        assert any("restarting" in line for line in said)
        assert SupervisedProcesses(tmp_path).states() == {"worker": "running (restarts: 1)"}
        # The restart is a metric the local alarm sink pages on.
        metrics = [
            json.loads(line) for line in (tmp_path / "monitoring" / "metrics.jsonl").read_text().splitlines()
        ]
        assert any("ProcessRestarts" in json.dumps(m) for m in metrics)
        sink = AlarmSink(tmp_path, console=None)
        fired = sink.run_once(now=time.time() + 120)
        assert [t.alarm for t in fired if t.new_state == "ALARM"] == [
            "claims-risk-process-restarts[Process=worker]"
        ]
    finally:
        supervisor.stop()
    assert json.loads((tmp_path / "run" / "children.json").read_text())["worker"]["state"] == "stopped"


def test_a_crash_loop_gives_up_with_a_clear_message(tmp_path: Path) -> None:
    crasher = spec(tmp_path, "crasher", "import sys\nsys.exit(3)\n")
    supervisor = Supervisor(
        [crasher],
        tmp_path,
        say=lambda _: None,
        backoff_first_s=0.01,
        backoff_max_s=0.02,
        crash_loop_restarts=3,
    )
    supervisor.start()
    try:
        with pytest.raises(CrashLoop, match=r"crasher stopped 4 times .*exit code 3.*giving up"):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                supervisor.check()
                time.sleep(0.02)
    finally:
        supervisor.stop()
