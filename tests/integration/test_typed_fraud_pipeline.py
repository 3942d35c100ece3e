"""Issue 14 points 4 and 7 end to end: a real-world-shaped fraud table described with ordered bands,
month and weekday names, dates assembled from year, month and week, per-column missing tokens and a
column that leaks the label trains through the pipeline with only its spec file; the model serves
raw claims as a client writes them and refuses a file of another spec once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest

from local.pipeline_runner import run_pipeline
from shared.ml.batch_scoring import BatchFileError, FileOutputs, score_file
from shared.ml.features import input_columns
from shared.ml.frames import read_parquet_folder
from shared.ml.model import RiskModel, unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from step_functions.pipeline import PipelineInputs
from tests.factories import local_test_services
from tests.fraud_table import fraud_table, write_fraud_case

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def typed_run(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    root = tmp_path_factory.mktemp("typed-fraud")
    data, spec = write_fraud_case(root / "case", 6_000, seed=11, extended=True)
    inputs = PipelineInputs(spec=str(spec), tuning_trials=0, cv_folds=0)
    return run_pipeline(data, root / "run", inputs, services=local_test_services(root / "home"))


@pytest.fixture(scope="module")
def model(typed_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> RiskModel:
    return RiskModel.load(unpack_model(typed_run.model_tarball, tmp_path_factory.mktemp("typed-model")))


def test_the_assembled_accident_date_is_the_time_axis_of_the_out_of_time_check(
    typed_run: PipelineRun,
) -> None:
    evaluation = json.loads((typed_run.run_dir / "evaluation.json").read_text(encoding="utf-8"))
    oot = evaluation["out_of_time"]
    assert "skipped" not in oot, oot
    assert oot["date_column"] == "AccidentDate"
    assert oot["later_from"] > oot["cutoff"] and oot["later_from"].startswith("2021-")
    splits = pd.concat([read_parquet_folder(typed_run.artifacts[n]) for n in ("train", "validation", "test")])
    later = splits["AccidentDate"] >= pd.Timestamp(oot["later_from"])
    assert oot["test_rows"] == int(later.sum())
    # The validated data keeps the leaking column for analysis; the month is written as a name.
    assert set(splits["InvestigationResult"]) == {"cleared", "fraud confirmed"}
    assert set(splits["Month"]) <= {
        "Jan",
        "Feb",
        "Mar",
        "Apr",
        "May",
        "Jun",
        "Jul",
        "Aug",
        "Sep",
        "Oct",
        "Nov",
        "Dec",
    }
    assert splits["Age"].isna().mean() > 0.01  # "0" meant unknown


def test_the_model_reads_bands_by_order_and_never_the_leaking_column(model: RiskModel) -> None:
    encoder = model.encoder
    assert encoder.ordinals["VehiclePrice"][-1] == "more than 39000"
    assert encoder.calendar == {"Month": "month", "DayOfWeek": "weekday"}
    inputs = set(input_columns(encoder))
    assert "InvestigationResult" not in inputs and "RepNumber" not in inputs and "Sex" not in inputs
    assert {"Year", "MonthClaimed", "WeekOfMonthClaimed"} <= inputs  # the parts of the assembled dates
    features = model.baseline["features"]
    assert "InvestigationResult" not in features and "AccidentDate" not in features
    assert features["VehiclePrice"]["kind"] == "categorical"
    assert "days_accident_to_claim" in features


def test_raw_claims_score_with_factors_that_show_the_claims_own_bands(model: RiskModel) -> None:
    frame = fraud_table(200, seed=30, extended=True).drop(columns=["FraudFound", "InvestigationResult"])
    claims: list[dict[str, Any]] = [
        {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    claims[0] |= {"Month": "MARCH", "VehiclePrice": "More Than 39000", "Age": 0}
    answers = model.predict_records(claims)
    assert all(0 <= a["risk_score"] <= 1 for a in answers)
    assert model.predict_records(claims[:1]) == answers[:1], "one claim alone: the same answer"
    shown = 0
    for claim, answer in zip(claims, answers, strict=True):
        for factor in answer["risk_factors"]:
            if factor["factor"] in model.encoder.level_fields:
                assert factor["value"] == claim[factor["factor"]], factor  # the text, not a position
                shown += 1
    assert shown >= 20


def test_the_drop_folder_scores_the_table_and_fails_a_claims_file_once(
    model: RiskModel, tmp_path: Path
) -> None:
    source = tmp_path / "vehicle_claims.csv"
    fraud_table(300, seed=31, extended=True).drop(columns=["FraudFound"]).to_csv(source, index=False)
    outputs = FileOutputs(tmp_path / "scored.csv", tmp_path / "rejected.csv")
    summary: dict[str, Any] = score_file(model, source, outputs)
    assert summary["scored"] == 300 and summary["rejected"] == 0, summary
    scored = pd.read_csv(outputs.scored)
    factors = [f for text in scored["risk_factors"] for f in json.loads(text)]
    bands = [f["value"] for f in factors if f["factor"] == "Days_Policy_Accident"]
    assert bands and all(isinstance(v, str) for v in bands)

    claims = tmp_path / "claims.csv"
    write_claims(generate_claims(50, seed=3), claims)
    elsewhere = FileOutputs(tmp_path / "c-scored.csv", tmp_path / "c-rejected.csv")
    with pytest.raises(
        BatchFileError, match=r"does not fit spec 'vehicle_fraud_typed'.*unexpected columns: claim_id"
    ):
        score_file(model, claims, elsewhere)
    assert not elsewhere.scored.exists() or not pd.read_csv(elsewhere.scored).shape[0]
