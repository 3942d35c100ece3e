"""On-call hears about local alarms: transitions in the log, on the console and at a webhook on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from local.alarm_sink import AlarmSink, alarm_sink_from_env
from sagemaker_jobs.inference.model_server import EndpointMetrics
from shared.adapters.metrics import LocalMetricsSink
from shared.adapters.webhook import WebhookNotifier
from shared.alarms import FEATURE_DRIFT_METRIC, MONITORING_NAMESPACE
from shared.ports import MetricDatum

HOUR = 3600.0
T0 = 1_800_000_000.0


class Receiver:
    """A webhook endpoint that keeps what it is sent."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:  # keep test output quiet
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()
        hook.server.server_close()
        hook.thread.join(5)


def drift(home: Path, value: float, at: float) -> None:
    LocalMetricsSink(home / "monitoring" / "metrics.jsonl").publish(
        MONITORING_NAMESPACE,
        [MetricDatum(FEATURE_DRIFT_METRIC, value, {"Endpoint": "claims-risk"}, timestamp=at)],
    )


class StarterSpy:
    def __init__(self) -> None:
        self.started: list[tuple[str, Mapping[str, Any]]] = []

    def start(self, execution_id: str, inputs: Mapping[str, Any]) -> str:
        self.started.append((execution_id, inputs))
        return execution_id


def test_a_drift_alarm_goes_ok_alarm_ok_and_the_webhook_hears_both_changes(
    tmp_path: Path, receiver: Receiver
) -> None:
    console: list[str] = []
    retrain = StarterSpy()
    sink = AlarmSink(
        tmp_path, pager=WebhookNotifier(receiver.url), console=console.append, retrain=retrain, delay_s=0
    )
    drift(tmp_path, 0.05, T0)
    assert [t.new_state for t in sink.run_once(T0 + 60)] == ["OK"]
    drift(tmp_path, 0.40, T0 + HOUR)  # PSI above 0.25: a major shift
    assert [t.new_state for t in sink.run_once(T0 + HOUR + 60)] == ["ALARM"]
    assert sink.run_once(T0 + HOUR + 120) == []  # still in ALARM: no second page
    drift(tmp_path, 0.10, T0 + 2 * HOUR + 30)
    assert [t.new_state for t in sink.run_once(T0 + 2 * HOUR + 60)] == ["OK"]

    name = "claims-risk-feature-drift[Endpoint=claims-risk]"
    # The first OK is logged but pages no one; ALARM and its end do.
    states = [(p["details"]["old_state"], p["details"]["new_state"]) for p in receiver.posts]
    assert states == [("OK", "ALARM"), ("ALARM", "OK")]
    alarm_post = receiver.posts[0]
    assert name in alarm_post["text"] and "0.4" in alarm_post["text"]
    assert alarm_post["attachments"][0]["color"] == "danger"
    assert alarm_post["details"]["dimensions"] == {"Endpoint": "claims-risk"}

    log = [json.loads(x) for x in (tmp_path / "monitoring" / "alarms.jsonl").read_text().splitlines()]
    assert [r["new_state"] for r in log] == ["OK", "ALARM", "OK"]
    assert len(console) == 3 and "ALARM" in console[1]
    state = json.loads((tmp_path / "monitoring" / "alarm_state.json").read_text())
    assert state[name]["state"] == "OK"
    # The drift alarm started one retraining run, with the pipeline's defaults.
    assert len(retrain.started) == 1 and retrain.started[0][1] == {}
    assert log[1]["retraining"] == retrain.started[0][0]


def test_retraining_on_drift_is_off_unless_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CLAIMS_RISK_RETRAIN_ON_DRIFT", raising=False)
    monkeypatch.delenv("CLAIMS_RISK_ALARM_WEBHOOK", raising=False)
    assert alarm_sink_from_env(tmp_path).retrain is None
    monkeypatch.setenv("CLAIMS_RISK_RETRAIN_ON_DRIFT", "true")
    assert alarm_sink_from_env(tmp_path).retrain is not None


def test_an_unreachable_webhook_does_not_lose_the_transition(tmp_path: Path) -> None:
    console: list[str] = []
    # A port nothing listens on: connection refused at once.
    sink = AlarmSink(tmp_path, pager=WebhookNotifier("http://127.0.0.1:9/hook", 2), console=console.append)
    drift(tmp_path, 0.9, T0)
    assert [t.new_state for t in sink.run_once(T0 + 100)] == ["ALARM"]
    assert "ALARM" in (tmp_path / "monitoring" / "alarms.jsonl").read_text()
    assert any("could not page" in line for line in console)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_model_servers_minute_metrics_drive_the_endpoint_alarms(tmp_path: Path) -> None:
    clock = Clock(T0)
    metrics = EndpointMetrics(LocalMetricsSink(tmp_path / "monitoring" / "metrics.jsonl"), clock=clock)
    for minute in range(3):  # three minutes of slow answers, and six server errors in the last one
        for i in range(200):
            metrics.record("claims-risk", 200, 400_000.0 if i % 10 == 0 else 20_000.0)
        if minute == 2:
            for _ in range(6):
                metrics.record("claims-risk", 500, 1_000.0)
        clock.now += 60
    metrics.close()

    lines = (tmp_path / "monitoring" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) < 3 * 200  # aggregated per minute, not a line per request
    sink = AlarmSink(tmp_path, console=None)
    fired = {t.key: t.new_state for t in sink.run_once(clock.now + 75)}
    assert fired == {"endpoint-latency": "ALARM", "endpoint-5xx": "ALARM"}
