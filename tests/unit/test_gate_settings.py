"""Gate floors that scale with the data, settable per spec and per run, shown beside the value reached."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from shared.feature_spec import FeatureSpec
from shared.gate_report import gates_section
from shared.gates import GateConfig, apply_settings, evaluate_gates
from shared.ml.evaluation import choose_threshold, classification_metrics
from shared.pipeline_tasks import GatesTask
from shared.promotion import decide
from step_functions.pipeline import PipelineInputs, prepare_run
from tests.fraud_table import fraud_spec

QUALITY = {"score": 0.99, "rows_in": 10_000, "rows_rejected": 10}


def scored_claims(prevalence: float, signal: float, rows: int = 60_000, seed: int = 0) -> dict[str, Any]:
    """Test-set metrics of a calibrated model whose log-odds separate the classes by ``signal``
    (0: a model that learned nothing), at the cost-chosen threshold, as the evaluate job measures."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    low, high = -12.0, 6.0
    for _ in range(60):  # the intercept that gives the asked positive rate
        intercept = (low + high) / 2
        p = 1 / (1 + np.exp(-(intercept + signal * x)))
        low, high = (intercept, high) if p.mean() < prevalence else (low, intercept)
    y = (rng.random(rows) < p).astype(int)
    return classification_metrics(y, p, choose_threshold(y, p))


def metric_gate(test: dict[str, Any], config: GateConfig | None = None, **evaluation: Any) -> Any:
    results = evaluate_gates(QUALITY, {"test": test, **evaluation}, config or GateConfig())
    return next(g for g in results if g.gate == "metric_floors")


@pytest.mark.parametrize("prevalence", [0.06, 0.25])
def test_the_default_floors_pass_a_good_model_and_fail_one_that_learned_nothing(prevalence: float) -> None:
    good, useless = scored_claims(prevalence, 1.8), scored_claims(prevalence, 0.0)
    assert good["roc_auc"] > 0.82 and metric_gate(good).passed, metric_gate(good).reason
    gate = metric_gate(useless)
    assert not gate.passed and "roc_auc" in gate.reason and "pr_auc_lift" in gate.reason


def test_at_a_six_percent_fraud_rate_the_absolute_floors_failed_a_good_model() -> None:
    good = scored_claims(0.06, 1.8)
    # What a good model reaches there: PR-AUC well under 0.5 and about half the fraud caught.
    assert good["pr_auc"] < 0.4 and good["recall"] < 0.7
    old = GateConfig(metric_floors={"roc_auc": 0.80, "pr_auc": 0.50, "recall": 0.70})
    assert not metric_gate(good, old).passed
    # Relative to the data, the same model ranks fraud several times better than chance.
    assert good["pr_auc_lift"] > 3 and good["recall_lift"] > 3
    assert metric_gate(good).passed


def test_an_absolute_recall_floor_passed_a_model_that_learned_nothing_where_the_lift_does_not() -> None:
    # Every claim scores 17%, above the cost-chosen threshold: all go to review, every fraud is "caught".
    useless = scored_claims(0.17, 0.0)
    assert useless["auto_approved_share"] == 0.0 and useless["recall"] == 1.0
    assert metric_gate(useless, GateConfig(metric_floors={"recall": 0.70})).passed
    assert useless["recall_lift"] == pytest.approx(1.0)
    assert not metric_gate(useless, GateConfig(metric_floors={"recall_lift": 1.5})).passed


def test_the_spec_sets_gates_and_the_run_overrides_the_spec_and_each_check_says_who_set_it() -> None:
    test = scored_claims(0.06, 1.5)
    spec_gates = {"roc_auc": 0.70, "pr_auc_lift": 2.0, "recall_lift": "off"}
    gate = metric_gate(test, spec_gates=spec_gates)
    by_name = {c.name: c for c in gate.checks}
    assert set(by_name) == {"roc_auc", "pr_auc_lift"}  # the spec turned the recall lift off
    assert by_name["roc_auc"].bound == 0.70 and by_name["roc_auc"].source == "spec"
    assert by_name["pr_auc_lift"].value == pytest.approx(test["pr_auc"] / test["prevalence"])
    run = GateConfig(overrides={"pr_auc_lift": "50", "recall": "0.2"})
    gate = metric_gate(test, run, spec_gates=spec_gates)
    by_name = {c.name: c for c in gate.checks}
    assert by_name["pr_auc_lift"].bound == 50 and by_name["pr_auc_lift"].source == "run"
    assert by_name["recall"].source == "run" and by_name["roc_auc"].source == "spec"
    assert not gate.passed and "pr_auc_lift" in gate.reason


def test_fairness_and_champion_settings_are_gates_too() -> None:
    evaluation = {
        "test": {"roc_auc": 0.9, "pr_auc_lift": 3.0, "recall_lift": 3.0, "pr_auc": 0.4},
        "champion": {"version": "v1", "test": {"pr_auc": 0.45, "roc_auc": 0.85}},
        "fairness": {"sex": {"selection_rate_ratio": 0.5, "selection_rate_ratio_upper_95": 0.55}},
    }
    passed = {g.gate: g for g in evaluate_gates(QUALITY, evaluation)}
    assert not passed["champion"].passed and passed["fairness"].passed
    settings = {"champion_metric": "roc_auc", "min_selection_rate_ratio": 0.6}
    judged = {g.gate: g for g in evaluate_gates(QUALITY, evaluation, GateConfig(overrides=settings))}
    assert (
        judged["champion"].passed and "roc_auc 0.9000 against champion v1 0.8500" in judged["champion"].reason
    )
    assert not judged["fairness"].passed
    [ratio] = [c for c in judged["fairness"].checks if "ratio" in c.name]
    assert (ratio.value, ratio.bound, ratio.source, ratio.kind) == (0.55, 0.6, "run", "floor")


def test_unknown_names_and_bad_values_fail_where_they_are_written() -> None:
    with pytest.raises(ValidationError, match="unknown gate 'pr_auc_lfit'"):
        GateConfig(overrides={"pr_auc_lfit": 2})
    with pytest.raises(ValidationError, match=r"roc_auc 1.5 is out of range \(0 to 1\)"):
        GateConfig(overrides={"roc_auc": 1.5})
    with pytest.raises(ValidationError, match="cannot be turned off"):
        GateConfig(overrides={"min_selection_rate_ratio": "off"})
    with pytest.raises(ValidationError, match="higher-is-better"):
        GateConfig(overrides={"champion_metric": "brier"})
    with pytest.raises(ValidationError, match="unknown gate 'prauc'"):
        FeatureSpec.model_validate(fraud_spec(gates={"prauc": 2}))
    spec = FeatureSpec.model_validate(fraud_spec(gates={"pr_auc_lift": "2.5", "recall_lift": "off"}))
    assert spec.gates == {"pr_auc_lift": 2.5, "recall_lift": None}
    assert apply_settings(GateConfig(), spec.gates).metric_floors == {"roc_auc": 0.80, "pr_auc_lift": 2.5}


def test_the_report_shows_each_floor_beside_the_value_reached_and_who_set_it() -> None:
    test = scored_claims(0.06, 1.8)
    decision = decide(QUALITY, {"test": test, "spec_gates": {"roc_auc": 0.75}}, GateConfig())
    html = gates_section(decision)
    assert 'id="gate-checks-table"' in html
    row = f"<td>metric_floors</td><td>roc_auc</td><td>{test['roc_auc']:.4f}</td><td>at least 0.7500</td>"
    assert row + "<td>the spec&#x27;s gates</td><td>pass</td>" in html
    lift = f"<td>pr_auc_lift</td><td>{test['pr_auc_lift']:.4f}</td><td>at least 1.5000</td><td>default</td>"
    assert lift in html


def test_a_runs_gate_settings_reach_the_state_machines_gates_task() -> None:
    prepared = prepare_run({"gates": {"overrides": {"pr_auc_lift": 2, "recall_lift": "off"}}})
    gates = prepared["inputs"]["gates"]
    assert gates["overrides"] == {"pr_auc_lift": 2.0, "recall_lift": None}
    # The state machine hands $.inputs.gates to the gates task as it is.
    task = GatesTask.model_validate(
        {"quality": "s3://b/q.json", "evaluation": "s3://b/e.json", "gates": gates}
    )
    assert task.gates.overrides == {"pr_auc_lift": 2.0, "recall_lift": None}
    with pytest.raises(ValidationError, match="unknown gate"):
        PipelineInputs.model_validate({"gates": {"overrides": {"bogus": 1}}})


def test_the_command_line_takes_gate_settings_and_refuses_unknown_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from local import cli

    seen: list[PipelineInputs] = []
    monkeypatch.setattr(cli, "_train", lambda data, rows, inputs, run_id=None: seen.append(inputs))
    done = CliRunner().invoke(
        cli.main,
        ["train", "--gate", "pr_auc_lift=2.5", "--gate", "recall_lift=off", "--max-flip-rate", "0.1"],
    )
    assert done.exit_code == 0, done.output
    assert seen[0].gates.overrides == {"pr_auc_lift": 2.5, "recall_lift": None, "max_replay_flip_rate": 0.1}
    refused = CliRunner().invoke(cli.main, ["pipeline", "run", "--gate", "pr_auc_lfit=2"])
    assert refused.exit_code == 2 and "unknown gate 'pr_auc_lfit'" in refused.output
    refused = CliRunner().invoke(cli.main, ["train", "--gate", "roc_auc"])
    assert refused.exit_code == 2 and "NAME=VALUE" in refused.output


def test_the_decision_records_the_bounds_it_applied() -> None:
    run = GateConfig(overrides={"pr_auc_lift": 2.0})
    decision = decide(QUALITY, {"test": scored_claims(0.06, 1.8), "spec_gates": {"roc_auc": 0.75}}, run)
    assert decision.config.metric_floors["roc_auc"] == 0.75  # the spec's
    assert decision.config.metric_floors["pr_auc_lift"] == 2.0  # the run's, over the default
