from __future__ import annotations

import pytest

from step_functions.pipeline import HYPERPARAMETERS, STEPS, parse_hyperparameters, step, step_names


def test_defaults_when_nothing_is_given() -> None:
    values = parse_hyperparameters({})
    assert values == {hp.name: hp.default for hp in HYPERPARAMETERS}


def test_strings_as_sagemaker_passes_them_are_parsed() -> None:
    values = parse_hyperparameters({"xgb_max_depth": "6", "xgb_eta": "0.05", "model_family": "xgboost"})
    assert values["xgb_max_depth"] == 6 and values["xgb_eta"] == 0.05


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"xgb_max_depth": "64"}, "outside"),
        ({"xgb_max_depth": "4.5"}, "not a valid int"),
        ({"xgb_eta": "fast"}, "not a valid float"),
        ({"model_family": "svm"}, "not one of"),
        ({"learning_rate": "0.1"}, "unknown hyperparameters"),
    ],
)
def test_bad_hyperparameters_fail_with_a_reason(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hyperparameters(raw)


def test_defaults_lie_inside_their_ranges() -> None:
    for hp in HYPERPARAMETERS:
        assert hp.parse(hp.default) == hp.default


def test_each_step_input_is_produced_by_an_earlier_step() -> None:
    available = {"raw"}
    for each in STEPS:
        assert set(each.inputs) <= available, each.name
        available |= set(each.outputs)
    # The order DESIGN.md §4 gives: validate → features → tune → train → evaluate → gates → register →
    # deploy → notify.
    assert step_names() == [
        "validate",
        "features",
        "tune",
        "train",
        "evaluate",
        "gates",
        "register",
        "deploy",
        "notify",
    ]


def test_a_stopping_gate_goes_to_notify_and_jobs_are_told_from_tasks() -> None:
    gates = step("gates")
    assert gates.on_stop_next == "notify"
    assert [s.name for s in STEPS if s.is_job] == ["validate", "features", "tune", "train", "evaluate"]


def test_a_tuning_trials_reserved_hyperparameters_are_accepted_and_left_out() -> None:
    """What a trial receives from SageMaker's tuner and the framework toolkits (issue 11, point 5):
    ``_tuning_objective_metric`` is added to every trial; ``sagemaker_*`` and ``model_dir`` by the
    framework estimators. None of them is a model hyperparameter, and none is a typo."""
    raw = {
        "xgb_max_depth": "5",
        "_tuning_objective_metric": "validation:pr_auc",
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": "s3://bucket/code.tar.gz",
        "sagemaker_region": '"eu-west-1"',
        "model_dir": "/opt/ml/model",
    }
    values = parse_hyperparameters(raw)
    assert values["xgb_max_depth"] == 5
    assert not {"_tuning_objective_metric", "sagemaker_program", "model_dir"} & set(values)


def test_a_typo_next_to_reserved_names_still_fails() -> None:
    with pytest.raises(ValueError, match=r"unknown hyperparameters: \['xgb_maxdepth'\]"):
        parse_hyperparameters({"_tuning_objective_metric": "validation:pr_auc", "xgb_maxdepth": "5"})
