"""A vehicle-claims fraud table shaped like real ones, for tests: banded categorical columns, month
names, an integer year as the time axis, about 6% fraud, and a lower fraud rate in the last year.

Generative process: each claim draws its year (the last year holds about 30% of the claims), month,
bands and policy from fixed shares; its fraud log-odds add a base, effects of fault, policy type,
past claims, deductible and vehicle price, and a drop of 0.5 in the last year (the base-rate shift a
real table shows between years). Sex is drawn independently of fraud: it is the protected column.
No one's data: the shapes are generic, the numbers are made up.
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


def fraud_table(rows: int, seed: int = 0, signal: float = 1.0) -> pd.DataFrame:
    """Raw claims as a CSV would hold them (target ``FraudFound`` as Yes/No). ``signal`` scales every
    effect: 0 gives a table where nothing predicts fraud."""
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
    return pd.DataFrame(
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


def write_fraud_case(
    folder: Path, rows: int, seed: int = 0, gates: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """The table as CSV and its spec as JSON, in ``folder``: (data, spec)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "vehicle_claims.csv"
    fraud_table(rows, seed).to_csv(data, index=False)
    spec = folder / "vehicle_fraud.json"
    spec.write_text(json.dumps(fraud_spec(gates=gates), indent=2), encoding="utf-8")
    return data, spec
