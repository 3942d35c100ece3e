"""The local tuner searches exactly the ranges the pipeline definition declares."""

from __future__ import annotations

import optuna
import pytest

from local.tuner import defaults_for, suggest
from shared.ml.families import FAMILIES
from step_functions.pipeline import HYPERPARAMETERS, PipelineInputs, parse_hyperparameters


def test_each_family_samples_only_its_own_hyperparameters_inside_the_ranges() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_families = set()
    for _ in range(60):
        trial = study.ask()
        params = suggest(trial, FAMILIES)
        family = params["model_family"]
        seen_families.add(family)
        for name, value in params.items():
            hp = next(h for h in HYPERPARAMETERS if h.name == name)
            assert hp.family in (None, family), (name, family)
            assert hp.parse(value) == value  # inside the declared range
        study.tell(trial, 0.5)
    assert seen_families == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_defaults_of_every_family_are_valid_training_input(family: str) -> None:
    values = parse_hyperparameters(defaults_for(family))
    assert values["model_family"] == family


def test_an_empty_input_is_a_complete_run_and_typos_are_refused() -> None:
    inputs = PipelineInputs.model_validate({})
    assert inputs.tuning_trials == 20 and inputs.spec == "claims"
    with pytest.raises(ValueError, match="tuning_trails"):
        PipelineInputs.model_validate({"tuning_trails": 5})
