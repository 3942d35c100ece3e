"""The promotion gates as pure rules: each says why it passes or fails."""

from __future__ import annotations

from typing import Any

from shared.gates import GateConfig, all_passed, evaluate_gates
from shared.promotion import RunOutcome, decide, registration_record

GOOD_QUALITY = {"score": 0.97, "rows_in": 1000, "rows_rejected": 3}


def evaluation(**test_changes: float) -> dict[str, Any]:
    # 30% positives, 40% of claims sent to review: PR-AUC lift 2.33, recall lift 2.0 (derived by the gates).
    test = {
        "roc_auc": 0.9,
        "pr_auc": 0.7,
        "prevalence": 0.3,
        "recall": 0.8,
        "auto_approved_share": 0.6,
        "false_negative_rate": 0.2,
        "threshold": 0.2,
    }
    test.update(test_changes)
    return {
        "model": {
            "version": "v2",
            "family": "xgboost",
            "spec": "claims",
            "data_sha256": "ab" * 32,
            "code_version": "abc123",
            "hyperparameters": {"model_family": "xgboost"},
        },
        "costs": {"missed_high_risk": 5.0, "needless_review": 1.0},
        "test": test,
        "fairness": {
            "gender": {
                "selection_rate_ratio": 0.8,
                "false_negative_rate_difference": 0.05,
                "false_negative_rate_difference_lower_95": 0.0,
            }
        },
    }


def by_gate(quality: dict[str, Any], ev: dict[str, Any], config: GateConfig | None = None) -> dict[str, Any]:
    return {g.gate: g for g in evaluate_gates(quality, ev, config or GateConfig())}


def test_a_good_first_model_passes_every_gate_with_reasons() -> None:
    results = evaluate_gates(GOOD_QUALITY, evaluation())
    assert all_passed(results)
    assert [g.gate for g in results] == ["data_quality", "metric_floors", "champion", "fairness"]
    assert all(g.reason for g in results)


def test_quality_at_or_below_the_floor_fails() -> None:
    gate = by_gate({"score": 0.9, "rows_in": 10, "rows_rejected": 1}, evaluation())["data_quality"]
    assert not gate.passed and "0.900" in gate.reason and "1 of 10 rows rejected" in gate.reason


def test_metric_floors_and_ceilings_name_each_shortfall() -> None:
    config = GateConfig(overrides={"false_negative_rate": 0.3})
    gate = by_gate(GOOD_QUALITY, evaluation(roc_auc=0.7, false_negative_rate=0.4), config)["metric_floors"]
    assert not gate.passed
    assert "roc_auc 0.700 < 0.800" in gate.reason and "false_negative_rate 0.400 > 0.300" in gate.reason


def test_a_missing_metric_fails_its_floor_rather_than_passing_silently() -> None:
    ev = evaluation()
    del ev["test"]["recall"]
    assert not by_gate(GOOD_QUALITY, ev)["metric_floors"].passed


def test_the_champion_gate_tolerates_a_small_drop_only() -> None:
    ev = evaluation(pr_auc=0.695)
    ev["champion"] = {"version": "v1", "test": {"pr_auc": 0.70}}
    assert by_gate(GOOD_QUALITY, ev)["champion"].passed
    ev["test"]["pr_auc"] = 0.68
    gate = by_gate(GOOD_QUALITY, ev)["champion"]
    assert not gate.passed and "champion v1" in gate.reason


def test_fairness_judges_the_gap_beyond_chance_and_the_selection_ratio() -> None:
    ev = evaluation()
    # A large raw gap on small groups that chance explains does not block.
    ev["fairness"]["gender"].update(
        false_negative_rate_difference=0.3, false_negative_rate_difference_lower_95=0.05
    )
    assert by_gate(GOOD_QUALITY, ev)["fairness"].passed
    ev["fairness"]["gender"]["false_negative_rate_difference_lower_95"] = 0.2
    gate = by_gate(GOOD_QUALITY, ev)["fairness"]
    assert not gate.passed and "gender: false-negative-rate difference" in gate.reason
    # A low selection-rate ratio that chance could explain passes; one beyond chance fails.
    ev["fairness"]["gender"].update(
        false_negative_rate_difference_lower_95=0.0,
        selection_rate_ratio=0.3,
        selection_rate_ratio_upper_95=0.6,
    )
    assert by_gate(GOOD_QUALITY, ev)["fairness"].passed
    ev["fairness"]["gender"]["selection_rate_ratio_upper_95"] = 0.4
    gate = by_gate(GOOD_QUALITY, ev)["fairness"]
    assert not gate.passed and "selection-rate ratio 0.300 (at most 0.400" in gate.reason


def test_the_decision_summarises_failures_and_the_registry_record_carries_lineage() -> None:
    decision = decide(GOOD_QUALITY, evaluation(roc_auc=0.5), GateConfig())
    assert not decision.passed and decision.summary().startswith("metric_floors: roc_auc 0.500")
    params, metrics, tags = registration_record(
        evaluation(), GOOD_QUALITY, decide(GOOD_QUALITY, evaluation(), GateConfig())
    )
    assert params["threshold"] == 0.2 and params["cost_missed_high_risk"] == 5.0
    assert metrics["test_roc_auc"] == 0.9 and metrics["data_quality_score"] == 0.97
    assert tags["data_sha256"] == "ab" * 32 and tags["code_version"] == "abc123"
    assert tags["gates"] == "every gate passed"


def test_each_outcome_has_a_subject_a_person_understands() -> None:
    promoted = RunOutcome(status="promoted", run="r", reason="ok", model_version="v2", family="xgboost")
    rejected = RunOutcome(status="rejected", run="r", reason="x", model_version="v2")
    failed = RunOutcome(status="failed", run="r", reason="boom", failed_step="train")
    assert "promoted to champion" in promoted.subject()
    assert "champion unchanged" in rejected.subject()
    assert "failed at train" in failed.subject()
