"""A claim served alone takes a shorter path (``RiskModel._predict_one``: its own encoder, the padded
one-row TreeSHAP kernel, top factors ranked in Python): its answer must be the batch code's, to the
last bit of every number, for every kind of claim; what the short path does not handle goes to the
batch code, errors included."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import xgboost as xgb

from shared.feature_spec import TARGET_COLUMN, DerivedFeature, claims_spec
from shared.ml.features import InvalidFeatureValue, columns_from_records, fit_encoder, input_columns
from shared.ml.model import RiskModel
from shared.ml.one_claim import OneClaimEncoder
from shared.ml.request_validation import validated_records
from shared.ml.synthetic import generate_claims
from shared.ml.treeshap import tables_from_booster
from tests.factories import minimal_claim


@pytest.fixture(scope="module")
def model(model_dir: Path) -> RiskModel:
    return RiskModel.load(model_dir)


def _plain(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def generated(n: int, seed: int) -> list[dict[str, Any]]:
    """Generated claims as a client sends them: ISO dates, missing fields left out."""
    frame = generate_claims(n, seed=seed).frame.drop(columns=[TARGET_COLUMN])
    rows = frame.to_dict("records")
    return [{str(k): _plain(v) for k, v in row.items() if not pd.isna(v)} for row in rows]


def varied(n: int, seed: int) -> list[dict[str, Any]]:
    """Generated claims with fields dropped, emptied and respelled in every way the encoder reads:
    numbers as text, flags as words, NaN for missing (as pandas gives), unknown levels, words
    of the vocabulary, ratios over zero, values beyond float32."""
    rng = random.Random(seed)
    claims = generated(n, seed)
    out = []
    for original in claims:
        claim = dict(original)
        for name in list(claim):
            if name != "claim_id" and rng.random() < 0.12:
                del claim[name]
        roll = rng.random()
        if roll < 0.1:
            claim["claim_amount"] = str(claim.get("claim_amount", 1200.5))
        elif roll < 0.15:
            claim["sum_insured"] = 0  # a ratio over nothing is missing
        elif roll < 0.2:
            claim["annual_premium"] = 1e39  # beyond float32: missing
        elif roll < 0.25:
            claim["claim_amount"] = float("nan")
        elif roll < 0.3:
            claim["vehicle_age"] = ""
        roll = rng.random()
        if roll < 0.1:
            claim["police_report"] = rng.choice(["yes", "no", "TRUE", " f ", "", 1, 0, 1.0, float("nan")])
        elif roll < 0.15:
            claim["region"] = rng.choice(["atlantis", "", "NORTH", float("nan"), 3])
        elif roll < 0.2:
            claim["claim_type"] = rng.choice(["spaceship", None, ""])
        elif roll < 0.3:
            claim["description"] = rng.choice(
                ["", "Fire FIRE fire, theft!", "the and for", "water damage after the storm, no witness"]
            )
        elif roll < 0.35:
            claim["incident_date"] = rng.choice(["", float("nan"), "1969-12-31", "2000-02-29"])
        out.append(claim)
    return out


def served(model: RiskModel, claim: dict[str, Any]) -> bytes:
    return orjson.dumps(model.predict_records([claim]))


def test_a_claim_alone_gets_the_batch_codes_answer_to_the_bit(model: RiskModel) -> None:
    claims = validated_records(generated(1500, seed=11), model.spec, as_text=False) + varied(1500, seed=12)
    together = model.predict_records(claims)  # many claims: the batch code
    took_short_path = 0
    for claim, expected in zip(claims, together, strict=True):
        alone = model._predict_one(claim)
        took_short_path += alone is not None
        assert served(model, claim) == orjson.dumps([expected]), claim
        # And the batch code on this claim with a neighbour: the same again.
        assert served(model, claim) == orjson.dumps(model.predict_records([claim, claims[0]])[:1]), claim
    assert took_short_path >= 0.95 * len(claims)  # the short path is the usual one, not a fallback


def test_every_validated_claim_takes_the_short_path(model: RiskModel) -> None:
    claims = validated_records(generated(300, seed=13), model.spec, as_text=False)
    claims.append(validated_records([minimal_claim()], model.spec, as_text=False)[0])
    assert all(model._predict_one(c) is not None for c in claims)


@pytest.mark.parametrize(
    "changes",
    [
        {"incident_date": "2024-1-5"},  # another spelling numpy reads
        {"report_date": 20240105},  # a number where a date belongs
        {"incident_date": "2024-02-30"},  # no such day: the transform's error
        {"claim_amount": "about 1200"},
        {"claim_amount": True},
        {"police_report": "perhaps"},
        {"sum_insured": [1, 2]},
    ],
)
def test_what_the_short_path_leaves_goes_to_the_batch_code(model: RiskModel, changes: dict[str, Any]) -> None:
    claim = minimal_claim(**changes)
    assert model._predict_one(claim) is None
    try:
        expected: Any = model.predict_records([claim, claim])[:1]
    except (InvalidFeatureValue, ValueError, TypeError) as error:
        with pytest.raises(type(error)) as alone:
            model.predict_records([claim])
        assert str(alone.value) == str(error)
        return
    assert served(model, claim) == orjson.dumps(expected)


def test_the_one_claim_encoder_gives_the_transforms_row(model: RiskModel) -> None:
    for claim in varied(500, seed=14):
        row = model._one_claim.encode(claim)
        if row is None:
            continue
        expected = model.encoder.transform(columns_from_records([claim], model._inputs), 1)
        assert row.dtype == expected.dtype and row.shape == expected.shape
        assert np.array_equal(row, expected, equal_nan=True), claim


def test_every_derived_operation_gives_the_transforms_value() -> None:
    """The spec's own derived features and one of each other operation (weekday, log1p), fitted on
    generated claims; then claims with every kind of value, as in the served-claim test."""
    spec = claims_spec()
    extra = [
        DerivedFeature(name="incident_weekday", op="weekday", inputs=["incident_date"]),
        DerivedFeature(name="log_amount", op="log1p", inputs=["claim_amount"]),
        DerivedFeature(name="log_deductible", op="log1p", inputs=["deductible"]),
        DerivedFeature(name="report_month", op="month", inputs=["report_date"]),
    ]
    spec = spec.model_copy(update={"derived": [*spec.derived, *extra]})
    frame = generate_claims(3000, seed=21).frame
    encoder = fit_encoder(spec, frame, frame[TARGET_COLUMN].to_numpy())
    one = OneClaimEncoder(encoder)
    claims = varied(1500, seed=22)
    for claim in claims[::3]:
        claim["deductible"] = -5.0  # log1p of a negative number is missing
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
# The one-row TreeSHAP kernel against the kernels for several rows.


def _booster(
    depth: int, n_features: int, seed: int, missing_share: float, rounds: int = 40
) -> tuple[xgb.Booster, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, n_features))
    x[:, 0] = rng.integers(0, 4, size=len(x))  # split values that coincide with data values
    y = ((x[:, 0] > 1) ^ (x[:, 1] + 0.5 * x[:, -1] > 0.3)).astype(int)
    x[rng.random(x.shape) < missing_share] = np.nan
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.3, "seed": seed, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(x, label=y, missing=np.nan), num_boost_round=rounds), x


@pytest.mark.parametrize(("depth", "missing_share"), [(1, 0.0), (4, 0.05), (6, 0.3), (8, 0.1)])
def test_one_row_gives_the_bits_of_many_rows(depth: int, missing_share: float) -> None:
    booster, x = _booster(depth, 6, seed=depth, missing_share=missing_share)
    tables = tables_from_booster(booster)
    assert tables is not None
    rows = np.vstack([x[:300], np.full((1, x.shape[1]), np.nan), np.full((1, x.shape[1]), np.inf)])
    margin, contributions = tables.explain(rows)  # blocks of rows
    few_margin, few = tables.explain(rows[:5])  # the few-rows kernel
    for i in range(len(rows)):
        one_margin, one = tables.explain(rows[i : i + 1])
        assert one.shape == (1, x.shape[1])
        assert np.array_equal(one[0], contributions[i]) and one_margin[0] == margin[i]
        if i < 5:
            assert np.array_equal(one[0], few[i]) and one_margin[0] == few_margin[i]


def test_one_row_of_a_model_without_splits() -> None:
    _, x = _booster(3, 4, seed=5, missing_share=0.0, rounds=3)
    flat = xgb.train(
        {"objective": "binary:logistic", "gamma": 1e9, "nthread": 1},
        xgb.DMatrix(x, label=(x[:, 1] > 0).astype(int)),
        num_boost_round=3,
    )
    tables = tables_from_booster(flat)
    assert tables is not None
    margin, contributions = tables.explain(x[:1])
    assert np.all(contributions == 0)
    expected = float(flat.predict(xgb.DMatrix(x[:1]), output_margin=True)[0])
    assert math.isclose(float(margin[0]), expected, abs_tol=1e-6)
