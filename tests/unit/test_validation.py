"""The vectorized file validator applies the Claim model's rules, row by row, without a row loop."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from shared.feature_spec import ColumnKind, ColumnRole, ColumnSpec, FeatureSpec, TargetSpec, claims_spec
from shared.ml.synthetic import generate_claims
from shared.ml.validation import quality_report, validate_frame
from shared.schema import Claim

SPEC = claims_spec()
GOOD: dict[str, str] = {
    "claim_id": "CLM-1",
    "claim_amount": "15000",
    "claim_type": "auto",
    "customer_age": "35",
    "policy_tenure": "2",
    "claim_history": "1",
    "location": "urban",
    "is_high_risk": "0",
}


def as_csv_text(frame: pd.DataFrame) -> pd.DataFrame:
    """What pandas gives for a CSV read with dtype=str and keep_default_na=False."""
    text = frame.copy()
    for column in text.columns:
        if pd.api.types.is_datetime64_any_dtype(text[column]):
            text[column] = text[column].dt.strftime("%Y-%m-%d")
        text[column] = text[column].astype("string").fillna("")
    return text.astype(object)


def test_clean_generated_claims_are_all_accepted_with_types() -> None:
    frame = generate_claims(3_000, seed=9).frame
    result = validate_frame(as_csv_text(frame), SPEC, require_target=True)
    assert result.rejected.empty, result.rejected.head()
    accepted = result.accepted
    assert len(accepted) == 3_000
    assert accepted["claim_amount"].dtype == "float64" and str(accepted["customer_age"].dtype) == "Int64"
    assert pd.api.types.is_datetime64_any_dtype(accepted["incident_date"])
    assert accepted["police_report"].dtype == "boolean" and set(accepted["is_high_risk"].unique()) <= {0, 1}
    pd.testing.assert_series_equal(accepted["claim_amount"], frame["claim_amount"], check_names=False)


def test_typed_parquet_input_gives_the_same_result_as_csv_text() -> None:
    frame = generate_claims(1_000, seed=2).frame
    typed = validate_frame(frame, SPEC, require_target=True).accepted
    text = validate_frame(as_csv_text(frame), SPEC, require_target=True).accepted
    pd.testing.assert_frame_equal(typed, text, check_dtype=False)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"claim_amount": ""}, "claim_amount: missing"),
        ({"claim_amount": "-100"}, "claim_amount: -100 must be above 0"),
        ({"customer_age": "500"}, "customer_age: 500 is above the maximum 110"),
        ({"customer_age": "35.5"}, "customer_age: '35.5' is not a whole number"),
        ({"claim_amount": "abc"}, "claim_amount: 'abc' is not a number"),
        ({"claim_type": "boat"}, "claim_type: 'boat' is not one of"),
        (
            {"policy_start_date": "2024-06-01", "incident_date": "2024-05-01"},
            "incident_date must not be less than policy_start_date",
        ),
        ({"incident_date": "2099-01-01"}, "incident_date lies in the future"),
        ({"sum_insured": "1000", "deductible": "5000"}, "sum_insured must not be less than deductible"),
        ({"claim_id": "has space"}, "claim_id: 'has space' has characters that are not allowed"),
        ({"police_report": "maybe"}, "police_report: 'maybe' is not true or false"),
        ({"incident_date": "31/12/2024"}, "incident_date: '31/12/2024' is not a date"),
        ({"is_high_risk": ""}, "is_high_risk: missing label"),
        ({"is_high_risk": "perhaps"}, "is_high_risk: 'perhaps' is not a known label"),
    ],
)
def test_each_rule_rejects_with_a_reason_naming_the_column(change: dict[str, str], reason: str) -> None:
    frame = pd.DataFrame([GOOD, {**GOOD, "claim_id": "CLM-2", **change}])
    result = validate_frame(frame, SPEC, require_target=True)
    assert list(result.accepted["claim_id"]) == ["CLM-1"]
    [row] = result.rejected.to_dict(orient="records")
    assert row["row_number"] == 2 and reason in row["reason"], row["reason"]


def test_every_failure_of_a_row_is_listed_and_row_numbers_follow_the_offset() -> None:
    frame = pd.DataFrame([{**GOOD, "claim_amount": "-1", "customer_age": "500", "claim_type": "boat"}])
    result = validate_frame(frame, SPEC, require_target=True, row_offset=200_000)
    [row] = result.rejected.to_dict(orient="records")
    assert row["row_number"] == 200_001
    assert [r.split(":")[0] for r in row["reason"].split("; ")] == [
        "claim_amount",
        "claim_type",
        "customer_age",
    ]


def test_duplicates_name_the_first_row_and_a_missing_column_rejects_all() -> None:
    frame = pd.DataFrame([GOOD, GOOD, {**GOOD, "claim_id": "CLM-3"}])
    result = validate_frame(frame, SPEC, require_target=True)
    assert result.rejected["reason"].tolist() == ["claim_id: duplicate of row 1"]
    no_amount = validate_frame(frame.drop(columns="claim_amount"), SPEC, require_target=True)
    assert no_amount.accepted.empty
    assert (no_amount.rejected["reason"].str.contains("claim_amount: required column is missing")).all()


def test_accepted_plus_rejected_equals_input_and_the_report_adds_up() -> None:
    frame = as_csv_text(generate_claims(2_000, seed=4).frame)
    frame.loc[::50, "claim_amount"] = "oops"
    frame.loc[1::97, "customer_age"] = "7"
    frame["extra_column"] = "x"
    result = validate_frame(frame, SPEC, require_target=True)
    assert len(result.accepted) + len(result.rejected) == 2_000
    assert result.rejected["reason"].str.len().gt(0).all()
    report = quality_report([result], SPEC, len(result.accepted))
    assert report["rows_in"] == 2_000 and report["rows_rejected"] == len(result.rejected)
    assert report["rejections_by_rule"]["claim_amount:not_a_number"] == 40
    assert report["unknown_columns"] == ["extra_column"]
    assert 0 < report["score"] < 1 and report["completeness"]["claim_amount"] == 1.0


def typed_claim(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row as the API would receive it in JSON (numbers as numbers)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if value == "" or key == "is_high_risk":
            continue
        try:
            out[key] = (
                int(value)
                if key in {"customer_age", "claim_history", "witnesses", "vehicle_age"}
                else (
                    float(value)
                    if key in {"claim_amount", "policy_tenure", "sum_insured", "deductible", "annual_premium"}
                    else value
                )
            )
        except ValueError:
            out[key] = value
    return out


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"claim_amount": "0"},
        {"claim_amount": "10000000"},
        {"claim_amount": "10000001"},
        {"customer_age": "16"},
        {"customer_age": "15"},
        {"policy_tenure": "36"},
        {"claim_type": "life"},
        {"claim_type": "Auto"},
        {"deductible": "0"},
        {"sum_insured": "100", "deductible": "100"},
        {"incident_date": "2024-01-02", "report_date": "2024-01-01"},
        {"region": "North"},
        {"region": "north"},
        {"witnesses": "51"},
        {"vehicle_age": "80"},
        {"description": "x" * 4001},
    ],
)
def test_the_file_validator_agrees_with_the_claim_model(change: dict[str, str]) -> None:
    row = {**GOOD, **change}
    try:
        Claim.model_validate(typed_claim(row))
        model_accepts = True
    except ValidationError:
        model_accepts = False
    result = validate_frame(pd.DataFrame([row]), SPEC, require_target=True)
    assert (len(result.accepted) == 1) == model_accepts, result.rejected.to_dict(orient="records")


def test_a_foreign_spec_with_its_own_date_format_and_missing_token() -> None:
    spec = FeatureSpec(
        name="foreign",
        id_column="policy_number",
        target=TargetSpec(column="fraud_reported", positive=["Y"], negative=["N"]),
        columns=[
            ColumnSpec(name="policy_number", kind=ColumnKind.IDENTIFIER, role=ColumnRole.ID, required=True),
            ColumnSpec(name="incident_date", kind=ColumnKind.DATE, date_format="%m/%d/%Y"),
            ColumnSpec(name="police_report_available", kind=ColumnKind.BOOLEAN),
        ],
        missing_tokens=["", "?"],
    )
    frame = pd.DataFrame(
        {
            "policy_number": ["1", "2", "3"],
            "incident_date": ["1/25/2015", "2015-01-25", "?"],
            "police_report_available": ["YES", "?", "NO"],
            "fraud_reported": ["Y", "N", "N"],
        }
    )
    result = validate_frame(frame, spec, require_target=True, today=dt.date(2020, 1, 1))
    assert list(result.accepted["policy_number"]) == ["1", "3"]
    assert result.accepted["incident_date"].iloc[0] == pd.Timestamp("2015-01-25")
    assert result.accepted["police_report_available"].tolist() == [True, False]
    assert "incident_date: '2015-01-25' is not a date (%m/%d/%Y)" in result.rejected["reason"].iloc[0]
