from __future__ import annotations

import math
import re

import pytest

from shared.metric_lines import metric_definitions, metric_line, metric_regex, parse_metrics
from step_functions.pipeline import OBJECTIVE_METRIC, TRAINING_METRIC_DEFINITIONS, TRAINING_METRICS


@pytest.mark.parametrize("value", [0.912345, 1.0, 0.0, 1e-7, 123456.5, -0.25])
def test_printed_metrics_are_read_back_exactly(value: float) -> None:
    line = f"[train] noise before\n{metric_line('validation:roc_auc', value)}\nnoise after"
    assert parse_metrics(line, ["validation:roc_auc"]) == {"validation:roc_auc": value}


def test_nan_survives_and_names_do_not_collide() -> None:
    log = metric_line("validation:f1", float("nan")) + "\n" + metric_line("validation:f1_macro", 0.5)
    parsed = parse_metrics(log, ["validation:f1", "validation:f1_macro"])
    assert math.isnan(parsed["validation:f1"]) and parsed["validation:f1_macro"] == 0.5


def test_the_last_value_wins_as_in_sagemaker() -> None:
    log = metric_line("train:roc_auc", 0.7) + "\n" + metric_line("train:roc_auc", 0.8)
    assert parse_metrics(log, ["train:roc_auc"]) == {"train:roc_auc": 0.8}


def test_bad_metric_names_are_refused() -> None:
    with pytest.raises(ValueError):
        metric_line("ROC AUC", 0.5)


def test_definitions_cover_the_objective_and_compile() -> None:
    names = {d["Name"] for d in TRAINING_METRIC_DEFINITIONS}
    assert OBJECTIVE_METRIC in names and names == set(TRAINING_METRICS)
    for definition in metric_definitions(list(TRAINING_METRICS)):
        assert re.compile(definition["Regex"]).groups == 1
    assert metric_regex("a:b") != metric_regex("a:bc")
