from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from shared.ml.synthetic import generate_claims, write_claims
from shared.schema import Claim


@pytest.fixture(scope="module")
def claims() -> pd.DataFrame:
    return generate_claims(40_000, seed=3).frame


def test_same_seed_same_claims_and_other_seed_other_claims() -> None:
    a, b, c = generate_claims(2_000, seed=1), generate_claims(2_000, seed=1), generate_claims(2_000, seed=2)
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.true_probability, b.true_probability)
    assert not a.frame["claim_amount"].equals(c.frame["claim_amount"])


def test_class_balance_is_realistic(claims: pd.DataFrame) -> None:
    assert 0.10 <= claims["is_high_risk"].mean() <= 0.25


def test_every_generated_claim_passes_the_schema(claims: pd.DataFrame) -> None:
    sample = claims.sample(500, random_state=0).drop(columns="is_high_risk")
    for record in sample.to_dict(orient="records"):
        clean = {k: v for k, v in record.items() if not pd.isna(v)}
        for key in ("policy_start_date", "incident_date", "report_date"):
            if key in clean:
                clean[key] = clean[key].date()
        for key in ("customer_age", "policy_tenure", "claim_history", "vehicle_age", "witnesses"):
            if key in clean:
                clean[key] = int(clean[key])
        if "police_report" in clean:
            clean["police_report"] = bool(clean["police_report"])
        Claim.model_validate(clean)


def test_oracle_auc_is_high_but_not_perfect() -> None:
    generated = generate_claims(40_000, seed=4)
    oracle = roc_auc_score(generated.frame["is_high_risk"], generated.true_probability)
    assert 0.85 <= oracle <= 0.95


def test_risk_follows_the_documented_drivers(claims: pd.DataFrame) -> None:
    high = claims["is_high_risk"] == 1
    ratio = claims["claim_amount"] / claims["sum_insured"]
    assert ratio[high].median() > ratio[~high].median()
    assert claims.loc[high, "claim_history"].mean() > claims.loc[~high, "claim_history"].mean()
    red_flag = claims["description"].fillna("").str.contains("cash settlement|receipts unavailable")
    assert claims.loc[red_flag, "is_high_risk"].mean() > 2 * claims.loc[~red_flag, "is_high_risk"].mean()
    # Protected attributes carry no risk of their own.
    by_gender = claims.groupby("gender")["is_high_risk"].mean()
    assert abs(by_gender["female"] - by_gender["male"]) < 0.02


def test_some_claims_carry_only_the_brief_fields(claims: pd.DataFrame) -> None:
    optional = ["sum_insured", "description", "incident_date", "region"]
    assert 0.03 < claims[optional].isna().all(axis=1).mean() < 0.15


def test_the_drift_knob_moves_the_portfolio() -> None:
    base, drifted = generate_claims(20_000, seed=5).frame, generate_claims(20_000, seed=5, drift=1.0).frame
    assert (drifted["claim_amount"] / drifted["sum_insured"]).mean() > 1.2 * (
        base["claim_amount"] / base["sum_insured"]
    ).mean()
    assert (drifted["location"] == "urban").mean() > (base["location"] == "urban").mean() + 0.1
    assert drifted["customer_age"].mean() < base["customer_age"].mean() - 4


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_written_files_read_back_with_truth_beside_them(tmp_path: Path, suffix: str) -> None:
    generated = generate_claims(500, seed=6)
    path = write_claims(generated, tmp_path / "raw" / f"claims{suffix}", truth=tmp_path / "truth.parquet")
    back = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert len(back) == 500 and "true_probability" not in back.columns
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing else in the data folder
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert list(truth["claim_id"]) == list(back["claim_id"])
    if suffix == ".csv":
        assert back["incident_date"].dropna().str.match(r"^\d{4}-\d{2}-\d{2}$").all()


def test_unsupported_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.xlsx"):
        write_claims(generate_claims(10), tmp_path / "claims.xlsx")
