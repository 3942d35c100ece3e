"""What the evaluation step tells a claims manager, checked on a model trained by the real pipeline."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun


@pytest.fixture(scope="module")
def evaluation(trained_run: PipelineRun) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((trained_run.run_dir / "evaluation.json").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def report(trained_run: PipelineRun) -> str:
    return (trained_run.run_dir / "report.html").read_text(encoding="utf-8")


def test_every_metric_the_brief_names_is_measured_on_the_holdout(evaluation: dict[str, Any]) -> None:
    test = evaluation["test"]
    for metric in (
        "roc_auc",
        "pr_auc",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "false_negative_rate",
        "false_positive_rate",
        "brier",
    ):
        assert 0.0 <= test[metric] <= 1.0, metric
    matrix = test["confusion_matrix"]
    assert sum(matrix.values()) == test["rows"] == 1_800  # 15% of 12,000
    assert len(evaluation["reliability"]["bins"]) >= 5
    assert evaluation["curves"]["roc"]["fpr"][0] == 0.0


def test_the_cost_chosen_threshold_costs_less_than_one_half_and_the_report_shows_both(
    evaluation: dict[str, Any], report: str
) -> None:
    chosen, half = evaluation["threshold_comparison"]["chosen"], evaluation["threshold_comparison"]["half"]
    assert chosen["threshold"] != 0.5 and half["threshold"] == 0.5
    assert chosen["expected_cost"] < half["expected_cost"]
    assert 0.0 < chosen["auto_approved_share"] < half["auto_approved_share"] <= 1.0
    assert 'id="threshold-table"' in report and f"{chosen['expected_cost']:.4f}" in report
    assert f"{half['expected_cost']:.4f}" in report


def test_the_report_prints_the_model_and_the_oracle_auc(evaluation: dict[str, Any], report: str) -> None:
    oracle, model = evaluation["oracle_roc_auc"], evaluation["test"]["roc_auc"]
    assert 0.85 < oracle < 0.95 and oracle - model < 0.03  # 12k rows: a little short of the 100k bench
    assert f"{oracle:.4f}" in report and f"{model:.4f}" in report


def test_fairness_covers_every_protected_attribute_which_never_reaches_the_model(
    evaluation: dict[str, Any],
) -> None:
    assert set(evaluation["fairness"]) == {"customer_age_band", "gender", "location"}
    for attribute in evaluation["fairness"].values():
        assert {"selection_rate_ratio", "false_negative_rate_difference"} <= set(attribute)
        assert all("selection_rate" in g and "false_negative_rate" in g for g in attribute["groups"])
    screen = evaluation["feature_screen"]
    assert not set(screen["model_inputs"]) & {"customer_age", "gender", "location"}
    assert not screen["leaks"]


def test_global_importance_and_the_out_of_time_check_are_reported(evaluation: dict[str, Any]) -> None:
    importance = evaluation["global_importance"]
    assert importance[0]["mean_abs_contribution"] >= importance[-1]["mean_abs_contribution"]
    assert {"customer_age", "gender", "location"}.isdisjoint(f["factor"] for f in importance)
    oot = evaluation["out_of_time"]
    assert oot["date_column"] == "incident_date" and oot["train_rows"] > oot["test_rows"] > 0
    assert oot["metrics"]["roc_auc"] > 0.75


def test_the_gates_and_their_reasons_are_in_the_final_report(evaluation: dict[str, Any], report: str) -> None:
    gates = evaluation["gates"]
    assert gates["passed"] and {g["gate"] for g in gates["gates"]} == {
        "data_quality",
        "metric_floors",
        "champion",
        "fairness",
    }
    assert all(g["reason"] in report for g in gates["gates"])
