"""A vehicle-claims fraud table shaped like real ones, for tests: banded categorical columns, month
names, an integer year as the time axis, about 6% fraud, and a lower fraud rate in the last year.

Generative process: each claim draws its year (the last year holds about 30% of the claims), month,
bands and policy from fixed shares; its fraud log-odds add a base, effects of fault, policy type,
past claims, deductible and vehicle price, and a drop of 0.5 in the last year (the base-rate shift a
real table shows between years). Sex is drawn independently of fraud: it is the protected column.
No one's data: the shapes are generic, the numbers are made up.

``extended=True`` appends the columns such tables also carry, drawn after the others (so the columns
above, fraud included, are the same): week of the month and weekday of the accident, the month and
week it was claimed (a few months written "0", unknown), the holder's age (0 when unknown), bands of
vehicle age, number of cars and days from policy start to accident, a representative number (an id),
and an investigation result known only after the decision (it leaks the label). Fraud claims are
claimed later and more often within a week of the policy's start. :func:`typed_fraud_spec` describes
it with ordinal bands, month and weekday kinds, assembled dates and per-column missing tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

YEARS = (2019, 2020, 2021)
YEAR_SHARES = (0.38, 0.32, 0.30)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
AGE_BANDS = ("16 to 25", "26 to 35", "36 to 50", "over 50")
PRICE_BANDS = ("less than 20000", "20000 to 29000", "30000 to 39000", "more than 39000")
PAST_CLAIMS = ("none", "1", "2 to 4", "more than 4")
POLICY_TYPES = ("Sedan - All Perils", "Sedan - Collision", "Sport - Collision", "Utility - All Perils")
BASE_LOG_ODDS = -7.15
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
VEHICLE_AGES = ("new", "2 years", "3 to 4", "5 to 6", "more than 7")
CAR_COUNTS = ("1 vehicle", "2 vehicles", "3 to 4", "5 to 8", "more than 8")
POLICY_TO_ACCIDENT = ("none", "1 to 7", "8 to 15", "15 to 30", "more than 30")
AGE_RANGES = {"16 to 25": (16, 25), "26 to 35": (26, 35), "36 to 50": (36, 50), "over 50": (51, 85)}


def fraud_table(rows: int, seed: int = 0, signal: float = 1.0, extended: bool = False) -> pd.DataFrame:
    """Raw claims as a CSV would hold them (target ``FraudFound`` as Yes/No). ``signal`` scales every
    effect: 0 gives a table where nothing predicts fraud. ``extended``: with the columns above."""
    rng = np.random.default_rng(seed)
    year = rng.choice(YEARS, rows, p=YEAR_SHARES)
    fault = rng.choice(["Policy Holder", "Third Party"], rows, p=[0.72, 0.28])
    policy = rng.choice(POLICY_TYPES, rows, p=[0.3, 0.35, 0.1, 0.25])
    past = rng.choice(PAST_CLAIMS, rows, p=[0.3, 0.25, 0.3, 0.15])
    deductible = rng.choice([300, 400, 500, 700], rows, p=[0.05, 0.8, 0.1, 0.05])
    price = rng.choice(PRICE_BANDS, rows, p=[0.1, 0.5, 0.3, 0.1])
    log_odds = (
        BASE_LOG_ODDS
        + signal
        * (
            2.6 * (fault == "Policy Holder")
            + 2.2 * np.char.endswith(policy.astype(str), "All Perils")
            + 1.2 * (past == "none")
            - 0.8 * (past == "more than 4")
            + 0.8 * (deductible == 300)
            + 0.9 * (price == "more than 39000")
        )
        - 0.5 * (year == YEARS[-1])
    )
    fraud = rng.random(rows) < 1 / (1 + np.exp(-log_odds))
    table = pd.DataFrame(
        {
            "PolicyNumber": [f"P{i:06d}" for i in range(rows)],
            "Year": year,
            "Month": rng.choice(MONTHS, rows),
            "AgeOfPolicyHolder": rng.choice(AGE_BANDS, rows, p=[0.15, 0.35, 0.35, 0.15]),
            "VehiclePrice": price,
            "Fault": fault,
            "PolicyType": policy,
            "PastNumberOfClaims": past,
            "Deductible": deductible,
            "Sex": rng.choice(["Male", "Female"], rows, p=[0.55, 0.45]),
            "FraudFound": np.where(fraud, "Yes", "No"),
        }
    )
    return _extend(table, rng, fraud, signal) if extended else table


def _extend(table: pd.DataFrame, rng: np.random.Generator, fraud: np.ndarray, signal: float) -> pd.DataFrame:
    rows = len(table)
    week = rng.integers(1, 6, rows)
    # Weeks from accident to claim: fraud is claimed later (a signal only assembled dates reveal).
    lag = rng.integers(0, 3, rows) + np.where(
        fraud & (rng.random(rows) < signal), rng.integers(1, 4, rows), 0
    )
    month = np.array([MONTHS.index(m) + 1 for m in table["Month"]])
    claimed_week = week + lag
    claimed_month = np.minimum(month + (claimed_week - 1) // 5, 12)  # within the accident's year
    claimed_week = np.where(month + (claimed_week - 1) // 5 > 12, 5, (claimed_week - 1) % 5 + 1)
    month_claimed = np.array([MONTHS[m - 1] for m in claimed_month], dtype=object)
    month_claimed[rng.random(rows) < 0.01] = "0"  # unknown, as real tables write it
    soon = np.where(fraud & (rng.random(rows) < signal), 0.5, 0.03)  # a claim within days of the policy
    days_band = np.where(
        rng.random(rows) < soon,
        rng.choice(POLICY_TO_ACCIDENT[:2], rows),
        rng.choice(POLICY_TO_ACCIDENT[2:], rows, p=[0.05, 0.1, 0.85]),
    )
    ranges = [AGE_RANGES[band] for band in table["AgeOfPolicyHolder"]]
    age = np.array([rng.integers(low, high + 1) for low, high in ranges])
    age[rng.random(rows) < 0.03] = 0  # unknown
    outcome = np.where(fraud, "fraud confirmed", "cleared")
    flipped = rng.random(rows) < 0.02
    outcome[flipped] = np.where(fraud[flipped], "cleared", "fraud confirmed")
    return table.assign(
        WeekOfMonth=week,
        DayOfWeek=rng.choice(WEEKDAYS, rows),
        MonthClaimed=month_claimed,
        WeekOfMonthClaimed=claimed_week,
        Age=age,
        AgeOfVehicle=rng.choice(VEHICLE_AGES, rows, p=[0.05, 0.1, 0.25, 0.3, 0.3]),
        NumberOfCars=rng.choice(CAR_COUNTS, rows, p=[0.9, 0.05, 0.03, 0.015, 0.005]),
        Days_Policy_Accident=days_band,
        RepNumber=rng.integers(1, 17, rows),
        InvestigationResult=outcome,
    )[[c for c in table.columns if c != "FraudFound"] + [*EXTENDED_COLUMNS, "FraudFound"]]


EXTENDED_COLUMNS = (
    "WeekOfMonth",
    "DayOfWeek",
    "MonthClaimed",
    "WeekOfMonthClaimed",
    "Age",
    "AgeOfVehicle",
    "NumberOfCars",
    "Days_Policy_Accident",
    "RepNumber",
    "InvestigationResult",
)


def fraud_spec(name: str = "vehicle_fraud", gates: dict[str, Any] | None = None) -> dict[str, Any]:
    """The spec JSON a user would write for :func:`fraud_table` (the year is the time axis)."""
    categorical = ("Month", "AgeOfPolicyHolder", "VehiclePrice", "Fault", "PolicyType", "PastNumberOfClaims")
    spec: dict[str, Any] = {
        "name": name,
        "id_column": "PolicyNumber",
        "event_date": "Year",
        "target": {"column": "FraudFound", "positive": ["Yes"], "negative": ["No"]},
        "columns": [
            {"name": "PolicyNumber", "kind": "identifier", "role": "id", "required": True},
            {"name": "Year", "kind": "integer", "role": "context", "minimum": 1990, "maximum": 2100},
            *({"name": c, "kind": "categorical"} for c in categorical),
            {"name": "Deductible", "kind": "integer", "minimum": 0},
            {"name": "Sex", "kind": "categorical", "role": "protected"},
        ],
    }
    if gates is not None:
        spec["gates"] = gates
    return spec


def typed_fraud_spec(name: str = "vehicle_fraud_typed") -> dict[str, Any]:
    """The spec of the extended table with every kind a real claims table needs: ordered bands,
    month and weekday names, dates assembled from year, month and week (the accident's is the time
    axis), per-column missing tokens, an ignored id and a column that leaks the label."""

    def ordinal(column: str, levels: tuple[str, ...]) -> dict[str, Any]:
        return {"name": column, "kind": "ordinal", "levels": list(levels)}

    return {
        "name": name,
        "id_column": "PolicyNumber",
        "event_date": "AccidentDate",
        "target": {"column": "FraudFound", "positive": ["Yes"], "negative": ["No"]},
        "columns": [
            {"name": "PolicyNumber", "kind": "identifier", "role": "id", "required": True},
            {"name": "Year", "kind": "integer", "role": "context", "minimum": 1990, "maximum": 2100},
            {"name": "Month", "kind": "month"},
            {"name": "WeekOfMonth", "kind": "integer", "role": "context", "minimum": 1, "maximum": 5},
            {"name": "DayOfWeek", "kind": "weekday"},
            {"name": "MonthClaimed", "kind": "month", "role": "context", "missing_tokens": ["0"]},
            {"name": "WeekOfMonthClaimed", "kind": "integer", "role": "context", "minimum": 1, "maximum": 5},
            ordinal("AgeOfPolicyHolder", AGE_BANDS),
            ordinal("VehiclePrice", PRICE_BANDS),
            {"name": "Fault", "kind": "categorical"},
            {"name": "PolicyType", "kind": "categorical"},
            ordinal("PastNumberOfClaims", PAST_CLAIMS),
            {"name": "Deductible", "kind": "integer", "minimum": 0},
            {"name": "Sex", "kind": "categorical", "role": "protected"},
            {"name": "Age", "kind": "integer", "minimum": 16, "maximum": 100, "missing_tokens": ["0"]},
            ordinal("AgeOfVehicle", VEHICLE_AGES),
            ordinal("NumberOfCars", CAR_COUNTS),
            ordinal("Days_Policy_Accident", POLICY_TO_ACCIDENT),
            {"name": "RepNumber", "kind": "integer", "role": "ignore"},
            {"name": "InvestigationResult", "kind": "categorical", "role": "leakage"},
        ],
        "derived": [
            {"name": "AccidentDate", "op": "date_from_parts", "inputs": ["Year", "Month", "WeekOfMonth"]},
            {
                "name": "ClaimDate",
                "op": "date_from_parts",
                "inputs": ["Year", "MonthClaimed", "WeekOfMonthClaimed"],
            },
            {
                "name": "days_accident_to_claim",
                "op": "days_between",
                "inputs": ["AccidentDate", "ClaimDate"],
                "description": "days from the accident to its claim (by week of the month)",
            },
        ],
    }


def write_fraud_case(
    folder: Path, rows: int, seed: int = 0, gates: dict[str, Any] | None = None, extended: bool = False
) -> tuple[Path, Path]:
    """The table as CSV and its spec as JSON, in ``folder``: (data, spec). ``extended``: the extended
    table and :func:`typed_fraud_spec`."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "vehicle_claims.csv"
    fraud_table(rows, seed, extended=extended).to_csv(data, index=False)
    written = typed_fraud_spec() if extended else fraud_spec(gates=gates)
    if extended and gates is not None:
        written["gates"] = gates
    spec = folder / f"{written['name']}.json"
    spec.write_text(json.dumps(written, indent=2), encoding="utf-8")
    return data, spec
