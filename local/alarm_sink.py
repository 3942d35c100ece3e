"""The local alarm sink: the alarms of shared/alarms.py evaluated over the local metrics, as CloudWatch would.

Each run reads ``<home>/monitoring/metrics.jsonl``, evaluates every definition for every set of
dimension values it finds there, keeps the states in ``alarm_state.json`` and, on a change, writes
the transition to ``alarms.jsonl`` and the console and posts it to ``CLAIMS_RISK_ALARM_WEBHOOK``.
A drift alarm starts the retraining pipeline when ``CLAIMS_RISK_RETRAIN_ON_DRIFT`` is on (off by
default, as the AWS stage's ``retrain_on_drift``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, cast

from shared.adapters.metrics import LocalMetricsSink
from shared.adapters.notify import LocalNotifier
from shared.adapters.webhook import WebhookError, WebhookNotifier
from shared.alarm_evaluation import INITIAL_STATE, AlarmState, Datapoint, evaluate
from shared.alarms import ALARMS, LOCAL_ALARMS, RETRAIN_ON_ALARMS, AlarmDefinition
from shared.ports import Notifier, PipelineStarter, PipelineStartError

log = logging.getLogger("claims_risk.alarms")

PREFIX: Final = "claims-risk"
# The alarms whose ALARM starts a retraining run: the same two as the AWS stack's OnDrift rule.
# The endpoint's metrics are written once a minute, after the minute ends: evaluating periods that
# end this long ago means a period is never judged before its data has landed.
DEFAULT_DELAY_S: Final = 75.0
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")


def instance_name(definition: AlarmDefinition, dimensions: Mapping[str, str], prefix: str = PREFIX) -> str:
    """The alarm's name, with its dimension values when it has any (one alarm per endpoint, API, ...)."""
    values = ",".join(f"{k}={dimensions[k]}" for k in definition.dimensions if k in dimensions)
    return definition.alarm_name(prefix) + (f"[{values}]" if values else "")


@dataclass(frozen=True)
class Transition:
    alarm: str
    key: str
    dimensions: Mapping[str, str]
    old_state: AlarmState
    new_state: AlarmState
    reason: str
    at: float
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        return f"{self.alarm} is {self.new_state} (was {self.old_state})"

    def message(self) -> dict[str, Any]:
        return {
            "alarm": self.alarm,
            "key": self.key,
            "dimensions": dict(self.dimensions),
            "old_state": self.old_state,
            "new_state": self.new_state,
            "reason": self.reason,
            "description": self.description,
            "changed_at": _iso(self.at),
            **self.extra,
        }


def _print(line: str) -> None:
    print(line, flush=True)


class AlarmSink:
    def __init__(
        self,
        home: Path,
        *,
        definitions: Sequence[AlarmDefinition] = ALARMS + LOCAL_ALARMS,
        pager: Notifier | None = None,
        console: Callable[[str], None] | None = _print,
        retrain: PipelineStarter | None = None,
        delay_s: float = DEFAULT_DELAY_S,
        prefix: str = PREFIX,
    ) -> None:
        monitoring = home / "monitoring"
        self.metrics = LocalMetricsSink(monitoring / "metrics.jsonl")
        self.state_file = monitoring / "alarm_state.json"
        self.log = LocalNotifier(monitoring / "alarms.jsonl")
        self.definitions, self.pager, self.console = list(definitions), pager, console
        self.retrain, self.delay_s, self.prefix = retrain, delay_s, prefix

    def run_once(self, now: float | None = None) -> list[Transition]:
        """Evaluate every alarm at ``now`` (default: the clock); the transitions, already reported."""
        at = time.time() if now is None else now
        lookback = max(d.period_s * d.evaluation_periods for d in self.definitions) + self.delay_s
        # One alarm per definition and set of dimension values; CloudWatch matches a metric by its
        # exact set of dimensions, so a datum with more or fewer dimensions is another metric.
        by_metric = {(d.namespace, d.metric, frozenset(d.dimensions)): d for d in self.definitions}
        series: dict[str, tuple[AlarmDefinition, dict[str, str], list[Datapoint]]] = {}
        for metric in self.metrics.read():
            definition = by_metric.get((metric.namespace, metric.name, frozenset(metric.dimensions)))
            if definition is None or not at - lookback <= metric.timestamp < at:
                continue
            name = instance_name(definition, metric.dimensions, self.prefix)
            series.setdefault(name, (definition, dict(metric.dimensions), []))[2].append(
                Datapoint(metric.timestamp, metric.value)
            )
        states = self._load()
        # Alarms seen before but without data now are still evaluated: no data is "nothing happened".
        keys = {d.key: d for d in self.definitions}
        for name, entry in states.items():
            if name not in series and entry.get("key") in keys:
                series[name] = (keys[entry["key"]], dict(entry.get("dimensions", {})), [])
        transitions = []
        for name, (definition, dimensions, points) in sorted(series.items()):
            current = cast(AlarmState, states.get(name, {}).get("state", INITIAL_STATE))
            result = evaluate(definition, points, at, current, self.delay_s)
            change = self._change(
                name, definition.key, dimensions, current, result.state, result.reason, at, states
            )
            if change is not None:
                transitions.append(replace(change, description=definition.description))
        self._save(states, {t.alarm for t in transitions})
        for transition in transitions:
            self._report(transition)
        return transitions

    def set_state(
        self,
        name: str,
        key: str,
        dimensions: Mapping[str, str],
        state: AlarmState,
        reason: str,
        *,
        description: str = "",
        now: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Transition | None:
        """Set an alarm that is judged elsewhere (model quality); reported like the others on a change."""
        at = time.time() if now is None else now
        states = self._load()
        current = cast(AlarmState, states.get(name, {}).get("state", INITIAL_STATE))
        change = self._change(name, key, dimensions, current, state, reason, at, states)
        if change is None:
            return None
        transition = replace(change, description=description, extra=extra or {})
        self._save(states, {name})
        self._report(transition)
        return transition

    def states(self) -> dict[str, dict[str, Any]]:
        return self._load()

    @staticmethod
    def _change(
        name: str,
        key: str,
        dimensions: Mapping[str, str],
        current: AlarmState,
        new: AlarmState,
        reason: str,
        at: float,
        states: dict[str, dict[str, Any]],
    ) -> Transition | None:
        if name in states and new == current:
            states[name]["evaluated_at"] = _iso(at)
            return None
        states[name] = {
            "key": key,
            "dimensions": dict(dimensions),
            "state": new,
            "since": _iso(at),
            "evaluated_at": _iso(at),
            "reason": reason,
        }
        if new == current:
            return None  # a first evaluation that confirms the initial state is no transition
        return Transition(name, key, dimensions, current, new, reason, at)

    def _report(self, transition: Transition) -> None:
        message = transition.message()
        if (
            transition.new_state == "ALARM"
            and transition.key in RETRAIN_ON_ALARMS
            and self.retrain is not None
        ):
            execution_id = "drift-" + dt.datetime.fromtimestamp(transition.at, dt.UTC).strftime(
                "%Y%m%d-%H%M%S"
            )
            try:
                message["retraining"] = self.retrain.start(execution_id, {})  # the pipeline's defaults
            except PipelineStartError as error:
                message["retraining_error"] = str(error)
        self.log.notify(transition.subject, message)
        if self.console is not None:
            self.console(f"[alarm] {transition.subject}: {transition.reason}")
        # On-call hears about ALARM and its end; an alarm's first OK only goes to the log.
        if self.pager is not None and "ALARM" in {transition.old_state, transition.new_state}:
            try:
                self.pager.notify(transition.subject, message)
            except WebhookError as error:
                log.warning("%s", error)
                if self.console is not None:
                    self.console(f"[alarm] could not page on-call: {error}")

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            loaded = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _save(self, states: dict[str, dict[str, Any]], changed: set[str]) -> None:
        # Another process (the quality command) may have set its alarm since we read the file: re-read
        # and write back only what this run changed, plus fresh evaluation times.
        merged = self._load()
        for name, entry in states.items():
            if name in changed or name not in merged or merged[name].get("state") == entry.get("state"):
                merged[name] = entry
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(merged, indent=2, sort_keys=True), encoding="utf-8")
        temporary.replace(self.state_file)  # readers never see half a file


def alarm_sink_from_env(home: Path, console: Callable[[str], None] | None = _print) -> AlarmSink:
    """``CLAIMS_RISK_ALARM_WEBHOOK`` (optional URL) and ``CLAIMS_RISK_RETRAIN_ON_DRIFT`` (default off)."""
    url = os.environ.get("CLAIMS_RISK_ALARM_WEBHOOK", "").strip()
    retrain: PipelineStarter | None = None
    if os.environ.get("CLAIMS_RISK_RETRAIN_ON_DRIFT", "").strip().lower() in _TRUE:
        from shared.adapters.pipeline_starter import LocalPipelineStarter

        retrain = LocalPipelineStarter(home)
    return AlarmSink(home, pager=WebhookNotifier(url) if url else None, console=console, retrain=retrain)


class AlarmLoop:
    """Runs the sink every ``interval_s`` on a background thread until :meth:`stop`."""

    def __init__(self, sink: AlarmSink, interval_s: float) -> None:
        self.sink, self.interval_s = sink, interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alarm-sink", daemon=True)

    def start(self) -> AlarmLoop:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopped.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.sink.run_once()
            except Exception:  # a bad line or a full disk must not end on-call for the session
                log.exception("alarm evaluation failed")
            self._stopped.wait(self.interval_s)


def start_alarm_loop(home: Path, interval: float = 30.0, sink: AlarmSink | None = None) -> AlarmLoop:
    return AlarmLoop(sink or alarm_sink_from_env(home), interval).start()
