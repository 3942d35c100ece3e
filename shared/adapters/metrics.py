"""Metrics publishers: CloudWatch in AWS, a JSON Lines file here (read back by the local alarm sink)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.ports import MetricDatum, MetricsPublisher

CLOUDWATCH_BATCH = 1000  # PutMetricData's limit of values per call


class CloudWatchMetrics:
    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("cloudwatch")
        self.client = client

    def publish(self, namespace: str, metrics: Sequence[MetricDatum]) -> None:
        data = [
            {
                "MetricName": m.name,
                "Value": float(m.value),
                "Unit": m.unit,
                "Dimensions": [{"Name": k, "Value": v} for k, v in m.dimensions.items()],
                "Timestamp": m.timestamp if m.timestamp is not None else time.time(),
            }
            for m in metrics
        ]
        for start in range(0, len(data), CLOUDWATCH_BATCH):
            self.client.put_metric_data(
                Namespace=namespace, MetricData=data[start : start + CLOUDWATCH_BATCH]
            )


@dataclass(frozen=True)
class StoredMetric:
    namespace: str
    name: str
    value: float
    dimensions: dict[str, str]
    unit: str
    timestamp: float


class LocalMetricsSink:
    """Appends one JSON line per datum to ``<home>/monitoring/metrics.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(self, namespace: str, metrics: Sequence[MetricDatum]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        lines = [
            json.dumps(
                {
                    "namespace": namespace,
                    "name": m.name,
                    "value": float(m.value),
                    "dimensions": dict(m.dimensions),
                    "unit": m.unit,
                    "timestamp": m.timestamp if m.timestamp is not None else now,
                },
                sort_keys=True,
            )
            for m in metrics
        ]
        with self.path.open("a", encoding="utf-8") as out:
            out.write("".join(line + "\n" for line in lines))

    def read(self) -> Iterator[StoredMetric]:
        """Every stored datum, oldest first; a torn last line (a writer killed mid-line) is skipped."""
        if not self.path.is_file():
            return
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                yield StoredMetric(
                    row["namespace"],
                    row["name"],
                    float(row["value"]),
                    dict(row["dimensions"]),
                    row["unit"],
                    float(row["timestamp"]),
                )


def metrics_from_env(home: Path | None = None) -> MetricsPublisher:
    """CloudWatch when the job runs in SageMaker with publishing on, else the local sink."""
    if os.environ.get("publish_cloudwatch_metrics", "").lower() == "enabled":  # noqa: SIM112 (Model Monitor's name)
        return CloudWatchMetrics()
    root = home or Path(os.environ.get("CLAIMS_RISK_HOME", "data"))
    return LocalMetricsSink(root / "monitoring" / "metrics.jsonl")
