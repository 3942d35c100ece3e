"""Issue 14 point 4: a spec can describe the columns real claims tables have: ordered bands, month and
weekday names, a date assembled from year, month and week, missing tokens of one column, a column
that leaks the label, and a time axis that is an integer year or an assembled date."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shared.feature_spec import ColumnRole, FeatureSpec, claims_spec
from shared.ml.baseline import baseline_statistics
from shared.ml.drift import DriftAccumulator
from shared.ml.features import FittedEncoder, columns_from_records, fit_encoder, input_columns
from shared.ml.one_claim import OneClaimEncoder
from shared.ml.validation import validate_frame
from tests.fraud_table import fraud_spec, fraud_table, typed_fraud_spec


def typed_spec(**changes: Any) -> FeatureSpec:
    return FeatureSpec.model_validate({**typed_fraud_spec(), **changes})


def table(rows: int = 3000, seed: int = 5) -> pd.DataFrame:
    return fraud_table(rows, seed, extended=True)


def validated(frame: pd.DataFrame, spec: FeatureSpec | None = None) -> pd.DataFrame:
    result = validate_frame(frame.astype(str), spec or typed_spec(), require_target=True)
    assert result.rejected.empty, result.rejected.head()
    return result.accepted


def fitted(rows: int = 3000) -> tuple[FittedEncoder, pd.DataFrame]:
    accepted = validated(table(rows))
    return fit_encoder(typed_spec(), accepted, accepted["FraudFound"].to_numpy()), accepted


def raw_claims(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a client sends them: numbers as numbers, the label left out."""
    records = frame.drop(columns=["FraudFound"]).to_dict("records")
    return [{str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in records]


# ---------------------------------------------------------------------------------------------
# The spec file: what it may say, and what it refuses with a reason.


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"columns": [{"name": "PolicyNumber", "kind": "identifier"}, {"name": "b", "kind": "ordinal"}]},
            "levels",
        ),
        (
            {
                "columns": [
                    {"name": "PolicyNumber", "kind": "identifier"},
                    {"name": "b", "kind": "categorical", "levels": ["x"]},
                ]
            },
            "belong to an ordinal",
        ),
        (
            {
                "columns": [
                    {"name": "PolicyNumber", "kind": "identifier"},
                    {"name": "b", "kind": "ordinal", "levels": ["Low", "low "]},
                ]
            },
            "distinct",
        ),
        ({"event_date": "Sex"}, "must be a date or a number"),
        ({"event_date": "Nowhere"}, "neither a column nor a date_from_parts"),
        ({"derived": [{"name": "d", "op": "date_from_parts", "inputs": ["Year"]}]}, "takes 2 to 3 inputs"),
        ({"derived": [{"name": "d", "op": "ratio", "inputs": ["Age", "AccidentDate"]}]}, "unknown columns"),
        ({"derived": [{"name": "Age", "op": "log1p", "inputs": ["Deductible"]}]}, "names of columns"),
    ],
)
def test_a_spec_that_cannot_work_is_refused_naming_the_problem(change: dict[str, Any], message: str) -> None:
    spec = {**typed_fraud_spec(), **change}
    if "event_date" not in change:
        spec["event_date"] = "Year"
    with pytest.raises(ValueError, match=message):
        FeatureSpec.model_validate(spec)


def test_the_time_axis_may_be_an_integer_year_or_an_assembled_date() -> None:
    assert FeatureSpec.model_validate(fraud_spec()).event_date == "Year"
    spec = typed_spec()
    assert spec.event_date == "AccidentDate"
    assert [d.name for d in spec.assembled_dates] == ["AccidentDate", "ClaimDate"]
    assert [d.name for d in spec.model_derived] == ["days_accident_to_claim"]


def test_the_leakage_role_keeps_a_column_out_of_every_input() -> None:
    spec = typed_spec()
    assert [c.name for c in spec.leakage_columns] == ["InvestigationResult"]
    assert "InvestigationResult" not in spec.request_columns
    assert "RepNumber" not in spec.request_columns  # ignored columns are dropped on reading
    assert "InvestigationResult" in [c.name for c in spec.kept_columns]  # kept for analysis
    encoder, accepted = fitted()
    assert "InvestigationResult" not in input_columns(encoder)
    assert not any(c.factor == "InvestigationResult" for c in encoder.columns)
    # Validated and kept: its values are checked like any column's and stay in the validated data.
    assert set(accepted["InvestigationResult"]) == {"cleared", "fraud confirmed"}
    ruled = typed_spec(
        columns=[
            {**c, "allowed": ["cleared", "fraud confirmed"]} if c["name"] == "InvestigationResult" else c
            for c in typed_fraud_spec()["columns"]
        ]
    )
    wrong = table(20).astype(str)
    wrong.loc[3, "InvestigationResult"] = "pending"
    result = validate_frame(wrong, ruled, require_target=True)
    assert result.rejected["reason"].tolist() == [
        "InvestigationResult: 'pending' is not one of cleared, fraud confirmed"
    ]
    # Nor is it monitored: the capture never holds it.
    baseline = baseline_statistics(spec, accepted, len(accepted), np.zeros(len(accepted)))
    assert "InvestigationResult" not in baseline["features"]
    assert "AccidentDate" not in baseline["features"]  # a date always drifts: not monitored
    assert baseline["features"]["VehiclePrice"]["kind"] == "categorical"


def test_the_claims_spec_uses_none_of_the_new_kinds() -> None:
    spec = claims_spec()
    assert not spec.leakage_columns and not spec.assembled_dates
    assert all(c.levels is None and c.missing_tokens == [] for c in spec.columns)


# ---------------------------------------------------------------------------------------------
# Validation.


def test_ordered_bands_are_checked_against_their_levels_and_written_as_the_levels() -> None:
    frame = table(6).astype(str)
    frame.loc[0, "VehiclePrice"] = "MORE  than 39000"  # case and spacing aside, a level
    frame.loc[1, "VehiclePrice"] = "about 25000"
    frame.loc[2, "AgeOfVehicle"] = ""  # missing is allowed: not required
    result = validate_frame(frame, typed_spec(), require_target=True)
    assert result.rejected["reason"].tolist() == [
        "VehiclePrice: 'about 25000' is not one of the levels less than 20000, 20000 to 29000, "
        "30000 to 39000, more than 39000"
    ]
    accepted = result.accepted.set_index("PolicyNumber")
    assert accepted.loc["P000000", "VehiclePrice"] == "more than 39000"
    assert accepted["AgeOfVehicle"].isna()["P000002"]


@pytest.mark.parametrize(
    ("month", "weekday", "expected"),
    [
        ("Jan", "Mon", ("Jan", "Mon")),
        ("january", "MONDAY", ("Jan", "Mon")),
        ("SEP", "sunday", ("Sep", "Sun")),
        ("12", "7", ("Dec", "Sun")),
        (" Feb ", "tue", ("Feb", "Tue")),
    ],
)
def test_month_and_weekday_names_are_read_in_any_case_or_as_numbers(
    month: str, weekday: str, expected: tuple[str, str]
) -> None:
    frame = table(1).astype(str).assign(Month=month, DayOfWeek=weekday)
    accepted = validate_frame(frame, typed_spec(), require_target=True).accepted
    assert (accepted.loc[0, "Month"], accepted.loc[0, "DayOfWeek"]) == expected


def test_a_value_that_is_no_month_or_weekday_is_rejected_saying_what_is_expected() -> None:
    frame = table(3).astype(str)
    frame.loc[0, "Month"] = "13"
    frame.loc[1, "DayOfWeek"] = "Funday"
    frame.loc[2, "MonthClaimed"] = "0"  # the column's own missing token: accepted as unknown
    result = validate_frame(frame, typed_spec(), require_target=True)
    assert result.rejected["reason"].tolist() == [
        "Month: '13' is not a month (Jan-Dec, January-December or 1-12)",
        "DayOfWeek: 'Funday' is not a weekday (Mon-Sun, Monday-Sunday or 1-7)",
    ]
    assert result.accepted["MonthClaimed"].isna().tolist()[0]


def test_a_columns_own_missing_token_means_unknown_there_only() -> None:
    frame = table(4).astype(str)
    frame.loc[0, "Age"] = "0"
    frame.loc[1, "Age"] = "0.0"
    frame.loc[2, "Deductible"] = "0"  # no token in this column: a real zero
    accepted = validate_frame(frame, typed_spec(), require_target=True).accepted
    assert accepted["Age"].isna().tolist()[:2] == [True, True]
    assert accepted.loc[2, "Deductible"] == 0
    # Without the token, an age of 0 breaks the column's minimum.
    plain = typed_spec(
        columns=[
            {**c, "missing_tokens": []} if c["name"] == "Age" else c for c in typed_fraud_spec()["columns"]
        ]
    )
    reasons = validate_frame(frame, plain, require_target=True).rejected["reason"].tolist()
    assert reasons == ["Age: 0 must be at least 16", "Age: 0 must be at least 16"]
    # Typed input (Parquet, JSON) holds numbers: the token matches the number too.
    typed = table(4).assign(Age=[0, 0.0, 40, 41])
    assert validate_frame(typed, typed_spec(), require_target=True).accepted["Age"].isna().sum() == 2


def test_an_assembled_date_joins_the_validated_data_as_a_date() -> None:
    frame = table(4).astype(str)
    frame[["Year", "Month", "WeekOfMonth", "MonthClaimed", "WeekOfMonthClaimed"]] = [
        ["2020", "Feb", "5", "Mar", "1"],  # a leap year: the 29th
        ["2019", "feb", "5", "0", "2"],  # no 29th: the month's last day; the claim's month unknown
        ["2021", "12", "1", "Dec", "3"],
        ["2021", "Jan", "", "Jan", "2"],  # no week: no date
    ]
    accepted = validate_frame(frame, typed_spec(), require_target=True).accepted
    assert str(accepted["AccidentDate"].dtype).startswith("datetime64")
    dates = [None if pd.isna(d) else d.date().isoformat() for d in accepted["AccidentDate"]]
    assert dates == ["2020-02-29", "2019-02-28", "2021-12-01", None]
    claimed = [None if pd.isna(d) else d.date().isoformat() for d in accepted["ClaimDate"]]
    assert claimed == ["2020-03-01", None, "2021-12-15", "2021-01-08"]


# ---------------------------------------------------------------------------------------------
# Encoding: the training path (validated data), the serving path (raw claims) and one claim alone.


def test_bands_encode_as_their_position_and_months_as_their_number() -> None:
    encoder, _ = fitted()
    assert encoder.ordinals["VehiclePrice"] == list(typed_fraud_spec()["columns"][8]["levels"])
    assert encoder.calendar == {"Month": "month", "DayOfWeek": "weekday"}
    assert {"VehiclePrice", "Month", "days_accident_to_claim"} <= set(encoder.feature_names)
    assert set(encoder.level_fields) >= {"Fault", "VehiclePrice", "Month", "DayOfWeek"}
    claim = {"VehiclePrice": "more than 39000", "Month": "March", "DayOfWeek": "sun", "Age": 0}
    row = encoder.transform(columns_from_records([claim], input_columns(encoder)), 1)[0]
    at = {name: row[k] for k, name in enumerate(encoder.feature_names)}
    assert (at["VehiclePrice"], at["Month"], at["DayOfWeek"]) == (3, 3, 7)
    assert np.isnan(at["Age"]), "the column's missing token, sent as a number, is missing"
    # The days between two assembled dates (the 2nd week of March to the 4th).
    claim |= {"Year": 2020, "WeekOfMonth": 2, "MonthClaimed": "Mar", "WeekOfMonthClaimed": 4}
    row = encoder.transform(columns_from_records([claim], input_columns(encoder)), 1)[0]
    assert row[encoder.feature_names.index("days_accident_to_claim")] == 14


def test_raw_claims_encode_as_the_validated_rows_do() -> None:
    """Serving reads the claim as sent (names in any case, numbers as numbers, "0" for unknown);
    training reads validated values: the same matrix."""
    encoder, _ = fitted()
    frame = table(400, seed=8)
    claims = raw_claims(frame)
    rng = random.Random(3)
    for claim in claims:
        if rng.random() < 0.3:
            claim["Month"] = rng.choice([claim["Month"].upper(), str(claim["Month"]).lower()])
        if rng.random() < 0.2:
            claim["VehiclePrice"] = " " + claim["VehiclePrice"].upper()
    accepted = validated(pd.DataFrame(claims).assign(FraudFound=frame["FraudFound"]))
    served = encoder.transform(columns_from_records(claims, input_columns(encoder)), len(claims))
    assert np.array_equal(served, encoder.transform(accepted), equal_nan=True)


def test_one_claim_alone_encodes_the_new_kinds_as_the_transform_does() -> None:
    encoder, _ = fitted()
    one = OneClaimEncoder(encoder)
    rng = random.Random(4)
    claims = raw_claims(table(600, seed=9))
    for claim in claims:
        roll = rng.random()
        if roll < 0.1:
            claim["Age"] = rng.choice([0, 0.0, "0", "0.0", " 0 ", None, "", 44.0])
        elif roll < 0.2:
            claim["Month"] = rng.choice(["MAR", "march", 3, "3", 3.0, "13", "Marz", None, ""])
        elif roll < 0.3:
            claim["VehiclePrice"] = rng.choice(["LESS than 20000", "about 25000", None, 20000])
        elif roll < 0.4:
            claim["MonthClaimed"] = rng.choice(["0", 0, "Dec", None])
        elif roll < 0.5:
            claim["WeekOfMonthClaimed"] = rng.choice([None, 0, 6, "2", 2.5])
        elif roll < 0.55:
            del claim["Year"]
    encoded = 0
    for claim in claims:
        row = one.encode(claim)
        if row is None:
            continue
        encoded += 1
        expected = encoder.transform(columns_from_records([claim], input_columns(encoder)), 1)
        assert np.array_equal(row, expected, equal_nan=True), claim
    assert encoded >= 0.95 * len(claims)


# ---------------------------------------------------------------------------------------------
# Monitoring: raw traffic against the training baseline does not drift for its spelling.


def test_traffic_like_the_training_data_shows_no_drift_from_names_tokens_or_dates() -> None:
    spec = typed_spec()
    accepted = validated(table(4000, seed=1))
    baseline = baseline_statistics(spec, accepted, len(accepted), np.zeros(len(accepted)))
    drift = DriftAccumulator(spec, baseline)
    drift.add_records(raw_claims(table(4000, seed=2)))
    report = {f.name: f for f in drift.report().features}
    assert {"VehiclePrice", "Month", "Age", "days_accident_to_claim"} <= set(report)
    assert "ClaimDate" not in report and "RepNumber" not in report
    assert max(f.psi for f in report.values()) < 0.05, {n: f.psi for n, f in report.items()}
    assert abs(report["Age"].current_missing_rate - report["Age"].baseline_missing_rate) < 0.02
    assert report["days_accident_to_claim"].current_missing_rate < 0.05


def test_a_foreign_spec_with_only_the_old_kinds_is_untouched() -> None:
    spec = FeatureSpec.model_validate(fraud_spec())
    assert all(c.role != ColumnRole.LEAKAGE for c in spec.columns)
    frame = fraud_table(500, 2)
    accepted = validate_frame(frame.astype(str), spec, require_target=True).accepted
    encoder = fit_encoder(spec, accepted, accepted["FraudFound"].to_numpy())
    assert not encoder.ordinals and not encoder.calendar
    assert list(accepted.columns) == [c.name for c in spec.columns] + ["FraudFound"]
