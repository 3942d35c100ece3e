"""A tuning budget too small for any trial: the run's output, trials.json and the evaluation report all
say how many trials ran of those asked, and the defaults train."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from local.jobs import run_processing
from local.pipeline_runner import run_tuning
from local.tuner import defaults_for
from step_functions.pipeline import PipelineInputs, step

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun


def test_trials_run_against_asked_reach_the_output_trials_json_and_the_report(
    trained_run: PipelineRun, tmp_path: Path
) -> None:
    lines: list[str] = []
    inputs = PipelineInputs(tuning_trials=3, tuning_timeout_s=0.001, tuning_folds=2)
    splits = {name: trained_run.artifacts[name] for name in ("train", "validation")}
    tuned = run_tuning(step("tune"), splits, tmp_path / "tune", inputs, None, lines.append)
    assert any(line.startswith("[tune] 0 of 3 trials run (0 completed) in ") for line in lines), lines
    trials = json.loads((tmp_path / "tune" / "trials.json").read_text(encoding="utf-8"))
    assert trials["budget"]["trials_asked"] == 3 and trials["budget"]["trials_run"] == 0
    assert trials["budget"]["ended_by"].startswith("the budget: ")
    chosen = json.loads(tuned.outputs["hyperparameters"].read_text(encoding="utf-8"))
    assert chosen == defaults_for("xgboost")  # what trains when no trial completed

    evaluate = step("evaluate")
    available = {name: trained_run.artifacts[name] for name in evaluate.inputs}
    available["tuning"] = tuned.outputs["tuning"]
    run_processing(evaluate, available, tmp_path / "evaluate", ["--cv-folds", "0", "--replay-days", "0"])
    folder = tmp_path / "evaluate" / "evaluation"
    evaluation = json.loads((folder / "evaluation.json").read_text(encoding="utf-8"))
    assert evaluation["tuning"]["budget"] == trials["budget"]
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="tuning-table"' in report and "<b>0 of 3 trials run</b>" in report
