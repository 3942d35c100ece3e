"""Evaluating an alarm definition over datapoints as CloudWatch does: local alarms fire when AWS's would.

Pure: the caller brings the datapoints, the time and the alarm's current state. The last
``evaluation_periods`` periods end at the evaluation time (less a delay for late data); each period's
datapoints reduce to one value by the statistic; the alarm fires when at least ``datapoints_to_alarm``
of those values cross the threshold. Missing periods follow ``treat_missing_data``:

* ``notBreaching`` / ``breaching``: a missing period counts as good / bad;
* ``missing`` / ``ignore``: only the periods with data count; the state changes only when they decide
  it (enough breaches for ALARM, too many good values for it to be ALARM even if every gap breached).
  With no data at all, ``missing`` goes to INSUFFICIENT_DATA and ``ignore`` keeps the state.

CloudWatch also reaches further back for data when periods are missing; that refinement is left out.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from shared.alarms import AlarmDefinition

AlarmState = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
INITIAL_STATE: Final[AlarmState] = "INSUFFICIENT_DATA"  # as CloudWatch starts every new alarm
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")
_COMPARISON_WORDS: Final = {
    "GreaterThanThreshold": "greater than",
    "GreaterThanOrEqualToThreshold": "greater than or equal to",
    "LessThanThreshold": "less than",
}


@dataclass(frozen=True)
class Datapoint:
    timestamp: float  # seconds since the epoch
    value: float


def statistic(values: Sequence[float], name: str) -> float:
    """One period's value: Sum, Average, Maximum, Minimum, SampleCount or a percentile such as p95."""
    if not values:
        raise ValueError("a statistic needs at least one value")
    if name == "Sum":
        return float(math.fsum(values))
    if name == "Average":
        return float(math.fsum(values) / len(values))
    if name == "Maximum":
        return float(max(values))
    if name == "Minimum":
        return float(min(values))
    if name == "SampleCount":
        return float(len(values))
    match = _PERCENTILE.match(name)
    if match is None:
        raise ValueError(f"unknown statistic {name!r}")
    # Nearest rank: the smallest value with at least p% of the values at or below it.
    ordered = sorted(values)
    rank = max(1, math.ceil(float(match.group(1)) / 100 * len(ordered)))
    return float(ordered[rank - 1])


def breaches(definition: AlarmDefinition, value: float) -> bool:
    if definition.comparison == "GreaterThanThreshold":
        return value > definition.threshold
    if definition.comparison == "GreaterThanOrEqualToThreshold":
        return value >= definition.threshold
    return value < definition.threshold


def period_values(
    definition: AlarmDefinition, datapoints: Iterable[Datapoint], now: float, delay_s: float = 0.0
) -> list[float | None]:
    """The statistic of each of the last ``evaluation_periods`` periods, oldest first; None when empty.

    Periods are half-open, ``[start, end)``, and the newest ends at ``now - delay_s``.
    """
    end = now - delay_s
    count, period = definition.evaluation_periods, definition.period_s
    start = end - count * period
    buckets: list[list[float]] = [[] for _ in range(count)]
    for point in datapoints:
        if start <= point.timestamp < end:
            buckets[min(int((point.timestamp - start) // period), count - 1)].append(point.value)
    return [statistic(b, definition.statistic) if b else None for b in buckets]


@dataclass(frozen=True)
class Evaluation:
    state: AlarmState
    values: tuple[float | None, ...]  # per period, oldest first
    breaching: int
    reason: str


def evaluate(
    definition: AlarmDefinition,
    datapoints: Iterable[Datapoint],
    now: float,
    current: AlarmState = INITIAL_STATE,
    delay_s: float = 0.0,
) -> Evaluation:
    """The alarm's state at ``now``, given its state before."""
    values = period_values(definition, datapoints, now, delay_s)
    needed, periods = definition.datapoints_to_alarm, definition.evaluation_periods
    present = [v for v in values if v is not None]
    missing = len(values) - len(present)
    bad = sum(breaches(definition, v) for v in present)
    treat = definition.treat_missing_data
    if treat in {"breaching", "notBreaching"}:
        bad += missing if treat == "breaching" else 0
        state: AlarmState = "ALARM" if bad >= needed else "OK"
    elif not present:
        state = "INSUFFICIENT_DATA" if treat == "missing" else current
    elif bad >= needed:
        state = "ALARM"
    elif len(present) - bad > periods - needed:
        state = "OK"  # even if every missing period breached, too few would
    else:
        state = current
    return Evaluation(state, tuple(values), bad, _reason(definition, values, bad, now, delay_s))


def _reason(
    definition: AlarmDefinition, values: Sequence[float | None], bad: int, now: float, delay_s: float
) -> str:
    end = now - delay_s
    shown = []
    for index, value in enumerate(values):
        if value is None:
            continue
        start = end - (len(values) - index) * definition.period_s
        when = dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        shown.append(f"{value:g} ({when})")
    comparison = _COMPARISON_WORDS[definition.comparison]
    points = ", ".join(shown) if shown else "no datapoints"
    return (
        f"{bad} out of the last {len(values)} datapoints [{points}] "
        f"{'was' if bad == 1 else 'were'} {comparison} the threshold ({definition.threshold:g}); "
        f"{definition.datapoints_to_alarm} needed, missing data {definition.treat_missing_data}"
    )
