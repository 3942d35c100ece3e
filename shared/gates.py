"""The promotion gates: the one place where "good enough to replace the champion" is defined.

Pure logic over the data-quality report and the evaluation JSON, so it runs the same in the local
runner and in the pipeline's gates Lambda. Each gate gives a clear reason whether it passes or not,
and each of its checks the value reached beside the floor (or ceiling) and who set it.

Every gate is settable by name (``name=value``), in three layers: the defaults below (or the run's
``gates`` object), a spec's ``gates`` section (the evaluation carries it as ``spec_gates``), then the
run's own settings (``GateConfig.overrides``: ``--gate name=value`` on the command line). A metric's
name sets its floor, or its ceiling for figures where lower is better; ``off`` removes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator

GateValue = float | str | None

# Test-set figures a floor can hold (higher is better) and those a ceiling can (lower is better).
FLOOR_METRICS: Final = frozenset(
    {"roc_auc", "pr_auc", "pr_auc_lift", "recall", "recall_lift", "precision", "f1", "accuracy"}
)
CEILING_METRICS: Final = frozenset(
    {"false_negative_rate", "false_positive_rate", "brier", "logloss", "expected_cost"}
)
# Figures that are not shares of claims, so not bounded by 1.
_UNBOUNDED: Final = frozenset({"pr_auc_lift", "recall_lift", "logloss", "expected_cost"})
# The gates' own settings, settable by the same names as GateConfig's fields.
SCALAR_SETTINGS: Final = (
    "min_data_quality_score",
    "champion_metric",
    "champion_tolerance",
    "max_false_negative_rate_difference",
    "min_selection_rate_ratio",
    "max_replay_flip_rate",
)
OFF: Final = frozenset({"off", "none", ""})


def gate_names() -> list[str]:
    return sorted(FLOOR_METRICS | CEILING_METRICS) + list(SCALAR_SETTINGS)


def parse_gate_value(raw: GateValue) -> GateValue:
    """A setting's value as written (``0.8``, ``"0.8"``, ``"off"``, ``"roc_auc"``): a number, None
    for off, or text (only ``champion_metric`` takes text)."""
    if raw is None or isinstance(raw, bool):
        return None if raw is None else float(raw)
    if isinstance(raw, int | float):
        return float(raw)
    text = raw.strip()
    if text.lower() in OFF:
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _check_settings(settings: dict[str, GateValue]) -> dict[str, GateValue]:
    parsed = {name: parse_gate_value(value) for name, value in settings.items()}
    try:
        apply_settings(GateConfig(), parsed)  # an unknown name or a value out of range fails here
    except ValidationError as error:
        raise ValueError(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors())
        ) from None
    return parsed


# A spec's ``gates`` section and a run's overrides: {name: value}, checked when read.
GateSettings = Annotated[dict[str, GateValue], AfterValidator(_check_settings)]


class GateConfig(BaseModel):
    min_data_quality_score: float = Field(default=0.9, ge=0, le=1)
    # Floors on the test set. ROC-AUC is absolute (0.5 is chance at any positive rate); the others
    # scale with the data: PR-AUC as lift over the test set's positive rate (chance is 1 at 6% fraud
    # as at 40%), and recall at the cost-chosen threshold as lift over the share of claims sent to
    # review (reviewing as many claims at random catches that share). Absolute floors on PR-AUC and
    # recall failed good models on a 6% fraud table, and an absolute recall passed a model that
    # had learned nothing but sent three claims in four to review.
    metric_floors: dict[str, float] = Field(
        default_factory=lambda: {"roc_auc": 0.80, "pr_auc_lift": 1.5, "recall_lift": 1.5}
    )
    metric_ceilings: dict[str, float] = Field(default_factory=dict)
    champion_metric: str = "pr_auc"
    champion_tolerance: float = Field(
        default=0.01, ge=0, description="how much worse than the champion is tolerated"
    )
    max_false_negative_rate_difference: float = Field(default=0.15, ge=0, le=1)
    min_selection_rate_ratio: float = Field(default=0.5, ge=0, le=1)
    max_replay_flip_rate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="at most this share of the replayed live claims may change decision; None: no gate",
    )
    overrides: GateSettings = Field(
        default_factory=dict,
        description="this run's gate settings by name (--gate name=value), over the spec's gates section",
    )

    @field_validator("metric_floors", "metric_ceilings")
    @classmethod
    def _known_metrics(cls, bounds: dict[str, float], info: Any) -> dict[str, float]:
        allowed = FLOOR_METRICS if info.field_name == "metric_floors" else CEILING_METRICS
        for name, value in bounds.items():
            if name not in allowed:
                kind = "floor" if info.field_name == "metric_floors" else "ceiling"
                raise ValueError(f"{name!r} takes no {kind}: use one of {sorted(allowed)}")
            if not (0 <= value and (name in _UNBOUNDED or value <= 1)):
                raise ValueError(
                    f"{name} {value} is out of range ({'at least 0' if name in _UNBOUNDED else '0 to 1'})"
                )
        return bounds

    @field_validator("champion_metric")
    @classmethod
    def _comparable(cls, metric: str) -> str:
        if metric not in FLOOR_METRICS:
            raise ValueError(
                f"the champion is compared on a higher-is-better figure: {sorted(FLOOR_METRICS)}"
            )
        return metric


DEFAULT_GATES = GateConfig()


def apply_settings(config: GateConfig, settings: Mapping[str, GateValue]) -> GateConfig:
    """``config`` with each named setting applied: a metric's floor or ceiling (None removes it), or
    one of the gates' own settings."""
    data = config.model_dump(exclude={"overrides"})
    for name, raw in settings.items():
        value = parse_gate_value(raw)
        if name in FLOOR_METRICS or name in CEILING_METRICS:
            bounds = data["metric_floors" if name in FLOOR_METRICS else "metric_ceilings"]
            if value is None:
                bounds.pop(name, None)
            elif isinstance(value, str):
                raise ValueError(f"gate {name} takes a number or 'off', not {value!r}")
            else:
                bounds[name] = value
        elif name in SCALAR_SETTINGS:
            if value is None and name != "max_replay_flip_rate":
                raise ValueError(f"gate {name} cannot be turned off: give it a value")
            if isinstance(value, str) != (name == "champion_metric"):
                raise ValueError(f"gate {name}: {value!r} is not a valid value")
            data[name] = value
        else:
            raise ValueError(f"unknown gate {name!r}: use one of {gate_names()}")
    return GateConfig.model_validate(data)


Source = Literal["default", "spec", "run"]


def resolve(
    config: GateConfig, spec_settings: Mapping[str, GateValue] | None
) -> tuple[GateConfig, dict[str, Source]]:
    """The gates a run is judged by: ``config``, then the spec's settings, then the run's overrides;
    and which layer set each named setting."""
    spec_settings = spec_settings or {}
    resolved = apply_settings(apply_settings(config, spec_settings), config.overrides)
    sources: dict[str, Source] = dict.fromkeys(spec_settings, "spec")
    sources.update(dict.fromkeys(config.overrides, "run"))
    return resolved, sources


class GateCheck(BaseModel):
    """One figure a gate judges: the value reached against its floor (``>=``) or ceiling (``<=``)."""

    name: str
    value: float | None
    bound: float
    kind: Literal["floor", "ceiling"]
    passed: bool
    source: Source = "default"


class GateResult(BaseModel):
    gate: str
    passed: bool
    reason: str
    checks: list[GateCheck] = Field(default_factory=list)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _check(
    name: str, value: float, bound: float, kind: Literal["floor", "ceiling"], source: Source
) -> GateCheck:
    # NaN (a missing figure) fails either way: a gate never passes on what was not measured.
    passed = value >= bound if kind == "floor" else value <= bound
    return GateCheck(
        name=name,
        value=None if math.isnan(value) else value,
        bound=bound,
        kind=kind,
        passed=bool(passed),
        source=source,
    )


def gate_metric(test: Mapping[str, Any], name: str) -> float:
    """A test-set figure; the lifts from their parts when an older evaluation lacks them."""
    if test.get(name) is not None:
        return float(test[name])
    if name == "pr_auc_lift" and test.get("pr_auc") is not None and test.get("prevalence"):
        return float(test["pr_auc"]) / float(test["prevalence"])
    if (
        name == "recall_lift"
        and test.get("recall") is not None
        and test.get("auto_approved_share") is not None
    ):
        flagged = 1.0 - float(test["auto_approved_share"])
        return float(test["recall"]) / flagged if flagged > 0 else 0.0
    return float("nan")


def evaluate_gates(
    quality: dict[str, Any], evaluation: dict[str, Any], config: GateConfig = DEFAULT_GATES
) -> list[GateResult]:
    config, sources = resolve(config, evaluation.get("spec_gates"))

    def source(name: str) -> Source:
        return sources.get(name, "default")

    results = []
    score = _number(quality.get("score"))
    quality_check = GateCheck(
        name="data quality score",
        value=None if math.isnan(score) else score,
        bound=config.min_data_quality_score,
        kind="floor",
        passed=score > config.min_data_quality_score,  # strictly above: the floor itself fails
        source=source("min_data_quality_score"),
    )
    results.append(
        GateResult(
            gate="data_quality",
            passed=quality_check.passed,
            reason=f"data quality score {score:.3f} (floor {config.min_data_quality_score:.3f}; "
            f"{quality.get('rows_rejected', '?')} of {quality.get('rows_in', '?')} rows rejected)",
            checks=[quality_check],
        )
    )
    test = evaluation["test"]
    checks = [
        _check(m, gate_metric(test, m), floor, "floor", source(m))
        for m, floor in config.metric_floors.items()
    ]
    checks += [
        _check(m, gate_metric(test, m), ceiling, "ceiling", source(m))
        for m, ceiling in config.metric_ceilings.items()
    ]
    shortfalls = [
        f"{c.name} {_number(c.value):.3f} {'<' if c.kind == 'floor' else '>'} {c.bound:.3f}"
        for c in checks
        if not c.passed
    ]
    results.append(
        GateResult(
            gate="metric_floors",
            passed=not shortfalls,
            reason="; ".join(shortfalls)
            if shortfalls
            else "every metric meets its floor: "
            + (", ".join(f"{c.name} {_number(c.value):.3f}" for c in checks) or "none configured"),
            checks=checks,
        )
    )
    results.append(_champion_gate(evaluation, config, source))
    results.append(_fairness_gate(evaluation, config, source))
    if config.max_replay_flip_rate is not None:
        results.append(_replay_gate(evaluation, config.max_replay_flip_rate, source("max_replay_flip_rate")))
    return results


def _champion_gate(
    evaluation: dict[str, Any], config: GateConfig, source: Callable[[str], Source]
) -> GateResult:
    champion = evaluation.get("champion")
    metric = config.champion_metric
    if not champion:
        return GateResult(gate="champion", passed=True, reason="no champion yet: the first model")
    ours, theirs = gate_metric(evaluation["test"], metric), gate_metric(champion["test"], metric)
    check = _check(
        f"{metric} against the champion's less the tolerance",
        ours,
        theirs - config.champion_tolerance,
        "floor",
        source("champion_tolerance"),
    )
    return GateResult(
        gate="champion",
        passed=check.passed,
        reason=f"{metric} {ours:.4f} against champion {champion['version']} {theirs:.4f} "
        f"on the same holdout "
        f"(tolerance {config.champion_tolerance})",
        checks=[check],
    )


def _fairness_gate(
    evaluation: dict[str, Any], config: GateConfig, source: Callable[[str], Source]
) -> GateResult:
    problems = []
    checks = []
    for attribute, fairness in evaluation.get("fairness", {}).items():
        # Judged on 95% bounds: small groups' noise must not block a good model, nor hide a bad one
        # on large groups.
        fnr_gap = _number(fairness.get("false_negative_rate_difference"))
        fnr_gap_lower = _number(fairness.get("false_negative_rate_difference_lower_95", fnr_gap))
        ratio = _number(fairness.get("selection_rate_ratio"))
        ratio_upper = _number(fairness.get("selection_rate_ratio_upper_95", ratio))
        gap_check = _check(
            f"{attribute}: false-negative-rate difference beyond chance",
            0.0 if math.isnan(fnr_gap_lower) else fnr_gap_lower,
            config.max_false_negative_rate_difference,
            "ceiling",
            source("max_false_negative_rate_difference"),
        )
        ratio_check = _check(
            f"{attribute}: selection-rate ratio allowing for chance",
            1.0 if math.isnan(ratio_upper) else ratio_upper,
            config.min_selection_rate_ratio,
            "floor",
            source("min_selection_rate_ratio"),
        )
        checks += [gap_check, ratio_check]
        if not gap_check.passed:
            problems.append(
                f"{attribute}: false-negative-rate difference {fnr_gap:.3f} (at least {fnr_gap_lower:.3f} "
                f"beyond chance) > {config.max_false_negative_rate_difference:.3f}"
            )
        if not ratio_check.passed:
            problems.append(
                f"{attribute}: selection-rate ratio {ratio:.3f} (at most {ratio_upper:.3f} allowing for "
                f"chance) < {config.min_selection_rate_ratio:.3f}"
            )
    return GateResult(
        gate="fairness",
        passed=not problems,
        reason="; ".join(problems)
        if problems
        else "disparity within bounds across "
        + (", ".join(evaluation.get("fairness", {})) or "no protected attribute"),
        checks=checks,
    )


def _replay_gate(evaluation: dict[str, Any], ceiling: float, source: Source) -> GateResult:
    replayed = evaluation.get("replay") or {}
    rate = replayed.get("flip_rate")
    if rate is None:  # a first model, or no traffic yet: nothing would change for anyone
        why = replayed.get("skipped") or "no captured traffic in the window"
        return GateResult(gate="replay", passed=True, reason=f"no replay ({why})")
    check = _check("share of replayed claims changing decision", float(rate), ceiling, "ceiling", source)
    return GateResult(
        gate="replay",
        passed=check.passed,
        reason=f"{replayed['flips']:,} of {replayed['claims']:,} live claims would change decision "
        f"({float(rate):.2%}; ceiling {ceiling:.2%})",
        checks=[check],
    )


def all_passed(results: list[GateResult]) -> bool:
    return all(r.passed for r in results)
