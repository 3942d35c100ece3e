"""The local alarms judge a metric series as CloudWatch would: periods, statistics, M of N, missing data."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.alarm_evaluation import Datapoint, evaluate, period_values, statistic
from shared.alarms import alarm

NOW = 1_800_000_000.0  # a minute boundary


def test_statistics() -> None:
    values = [float(v) for v in range(1, 101)]
    assert statistic(values, "p95") == 95
    assert statistic(values, "p50") == 50
    assert statistic(values, "Sum") == 5050
    assert statistic(values, "Average") == 50.5
    assert statistic(values, "Maximum") == 100
    with pytest.raises(ValueError, match="statistic"):
        statistic(values, "Median")


def minute(index: int, values: list[float]) -> list[Datapoint]:
    """Values in the index-th minute before NOW (1 = the last full minute)."""
    start = NOW - 60 * index
    return [Datapoint(start + 1 + i * 0.01, v) for i, v in enumerate(values)]


def test_latency_alarms_only_after_three_slow_minutes() -> None:
    latency = alarm("endpoint-latency")  # p95 > 250 ms, 3 of 3 one-minute periods
    slow = [100_000.0] * 90 + [400_000.0] * 10  # p95 400 ms
    fast = [100_000.0] * 100
    two_slow = minute(3, fast) + minute(2, slow) + minute(1, slow)
    assert evaluate(latency, two_slow, NOW, "OK").state == "OK"
    three_slow = minute(3, slow) + minute(2, slow) + minute(1, slow)
    result = evaluate(latency, three_slow, NOW, "OK")
    assert result.state == "ALARM"
    assert result.values == (400_000.0, 400_000.0, 400_000.0)
    assert "3 out of the last 3 datapoints" in result.reason


def test_errors_are_summed_over_five_minutes() -> None:
    errors = alarm("endpoint-5xx")  # Sum > 5 over 300 s
    five = [Datapoint(NOW - 60 * i - 30, 1.0) for i in range(5)]
    assert evaluate(errors, five, NOW, "OK").state == "OK"
    assert evaluate(errors, [*five, Datapoint(NOW - 10, 1.0)], NOW, "OK").state == "ALARM"
    # An error older than the period no longer counts.
    assert evaluate(errors, [*five, Datapoint(NOW - 301, 1.0)], NOW, "OK").state == "OK"


def test_periods_end_at_the_evaluation_time_less_the_delay() -> None:
    drift = alarm("feature-drift")
    point = [Datapoint(NOW - 30, 0.5)]
    assert period_values(drift, point, NOW) == [0.5]
    assert period_values(drift, point, NOW - 30) == [None]  # the end is exclusive
    assert period_values(drift, point, NOW, delay_s=60) == [None]
    assert evaluate(drift, point, NOW + 31, "OK", delay_s=60).state == "ALARM"


@pytest.mark.parametrize(
    ("treatment", "before", "after"),
    [
        ("notBreaching", "ALARM", "OK"),
        ("breaching", "OK", "ALARM"),
        ("missing", "OK", "INSUFFICIENT_DATA"),
        ("ignore", "ALARM", "ALARM"),
    ],
)
def test_no_data_follows_treat_missing_data(treatment: str, before: str, after: str) -> None:
    definition = replace(alarm("endpoint-5xx"), treat_missing_data=treatment)  # type: ignore[arg-type]
    assert evaluate(definition, [], NOW, before).state == after  # type: ignore[arg-type]


def test_partial_data_decides_only_when_it_can() -> None:
    latency = replace(alarm("endpoint-latency"), treat_missing_data="missing")
    slow, fast = [400_000.0], [1.0]
    # Two slow minutes and a gap: three breaches are needed, the gap might have been one: no change.
    assert evaluate(latency, minute(3, slow) + minute(2, slow), NOW, "OK").state == "OK"
    assert evaluate(latency, minute(3, slow) + minute(2, slow), NOW, "ALARM").state == "ALARM"
    # A fast minute rules ALARM out.
    assert evaluate(latency, minute(3, fast) + minute(2, slow), NOW, "ALARM").state == "OK"
