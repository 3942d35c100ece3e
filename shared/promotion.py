"""What happens after evaluation: the gate decision, what the registry records, and what people are told.

Pure functions over the evaluation and data-quality JSON, so the local runner and the state machine's
tasks build the same records and the same notification.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, Field

from shared.gates import GateConfig, GateResult, all_passed, evaluate_gates, resolve

REGISTERED_MODEL_PREFIX: Final = "claims-risk"
# The holdout figures that judge a model (besides rows, prevalence, threshold and the confusion
# matrix): what the registry records and the report's metrics table shows.
QUALITY_METRICS: Final = (
    "roc_auc",
    "pr_auc",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "false_negative_rate",
    "false_positive_rate",
    "brier",
    "logloss",
    "expected_cost",
    "auto_approved_share",
)


def registered_model_name(spec_name: str) -> str:
    """One registered model per feature spec: versions of different specs never compete."""
    return f"{REGISTERED_MODEL_PREFIX}-{spec_name}"


class GateDecision(BaseModel):
    passed: bool
    gates: list[GateResult]
    config: GateConfig

    @property
    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        if self.passed:
            return "every gate passed"
        return "; ".join(f"{g.gate}: {g.reason}" for g in self.failures)


def decide(quality: dict[str, Any], evaluation: dict[str, Any], config: GateConfig) -> GateDecision:
    results = evaluate_gates(quality, evaluation, config)
    # Record the bounds as applied: the run's settings over the spec's over the defaults.
    applied, _ = resolve(config, evaluation.get("spec_gates"))
    return GateDecision(passed=all_passed(results), gates=results, config=applied)


def registration_record(
    evaluation: dict[str, Any], quality: dict[str, Any], decision: GateDecision
) -> tuple[dict[str, Any], dict[str, float], dict[str, str]]:
    """Params, metrics and tags that a registered version carries, lineage included."""
    model = evaluation["model"]
    params = {**model["hyperparameters"], "threshold": evaluation["test"]["threshold"]}
    params |= {f"cost_{k}": v for k, v in evaluation["costs"].items()}
    metrics = {
        f"test_{k}": float(evaluation["test"][k])
        for k in QUALITY_METRICS
        if evaluation["test"].get(k) is not None
    }
    for name, figures in (evaluation.get("cross_validation") or {}).items():
        if isinstance(figures, dict) and "mean" in figures:
            metrics[f"cv_{name}"] = float(figures["mean"])
    if evaluation.get("oracle_roc_auc") is not None:
        metrics["oracle_roc_auc"] = float(evaluation["oracle_roc_auc"])
    metrics["data_quality_score"] = float(quality["score"])
    tags = {
        "model_version": model["version"],
        "family": model["family"],
        "spec": model["spec"],
        "data_sha256": model["data_sha256"],
        "code_version": model["code_version"],
        "gates": decision.summary(),
    }
    return params, metrics, tags


class RunOutcome(BaseModel):
    """How a pipeline run ended; the body of its notification."""

    status: Literal["promoted", "rejected", "failed"]
    run: str
    reason: str
    spec: str | None = None
    model_version: str | None = None
    family: str | None = None
    registered_as: str | None = None
    champion_before: str | None = None
    failed_step: str | None = None
    gates: list[GateResult] = Field(default_factory=list)
    test_metrics: dict[str, float] = Field(default_factory=dict)
    report: str | None = None

    def subject(self) -> str:
        if self.status == "promoted":
            return f"claims-risk: model {self.model_version} ({self.family}) promoted to champion"
        if self.status == "rejected":
            return f"claims-risk: challenger {self.model_version} rejected, champion unchanged"
        return f"claims-risk: retraining failed at {self.failed_step}"


def outcome_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    test = evaluation["test"]
    return {
        k: float(test[k]) for k in ("roc_auc", "pr_auc", "recall", "false_negative_rate", "expected_cost")
    }
