"""The one format in which job scripts print metrics, and the regexes that read it back.

SageMaker's tuning and training jobs find objective metrics by applying ``MetricDefinitions`` regexes
to the job's log. Both the printed line and the regex come from here, so they cannot drift apart.
"""

from __future__ import annotations

import math
import re
from typing import Final

_NAME: Final = re.compile(r"^[a-z_]+:[a-z0-9_]+$")
# A float in the forms Python prints (including exponents), or nan/inf.
_NUMBER: Final = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|nan|-?inf)"


def metric_line(name: str, value: float) -> str:
    """One metric as printed on stdout, e.g. ``#metric validation:roc_auc=0.912345;``."""
    if not _NAME.match(name):
        raise ValueError(f"metric names look like 'channel:metric', got {name!r}")
    text = "nan" if math.isnan(value) else repr(float(value))
    return f"#metric {name}={text};"


def metric_regex(name: str) -> str:
    """The MetricDefinitions regex for one metric; its first group is the value."""
    return rf"#metric {re.escape(name)}=" + _NUMBER + ";"


def metric_definitions(names: list[str]) -> list[dict[str, str]]:
    """MetricDefinitions as SageMaker's CreateTrainingJob / CreateHyperParameterTuningJob take them."""
    return [{"Name": name, "Regex": metric_regex(name)} for name in names]


def parse_metrics(log: str, names: list[str]) -> dict[str, float]:
    """Read metrics back from a log the way SageMaker does: the last match of each regex wins."""
    found: dict[str, float] = {}
    for name in names:
        matches = re.findall(metric_regex(name), log)
        if matches:
            found[name] = float(matches[-1])
    return found
