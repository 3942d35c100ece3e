"""Synthetic insurance claims with a known generative process and known true risk.

The generative process (all vectorized, reproducible by seed):

1. **Portfolio.** ``claim_type`` (auto 42%, home 24%, health 16%, travel 8%, commercial 7%, life 3%),
   ``location`` (urban/suburban/rural), ``region`` (five regions), ``customer_age`` (normal around 46,
   clipped to 18..95) and ``gender`` are drawn independently.
2. **Policy and timing.** The incident date falls in 2022-2025 with more claims in winter. The time
   from policy start to incident is exponential (mean 5 years), except 8% of claims that come within
   90 days of the policy start. ``policy_tenure`` is the whole years between the two. The report delay
   is log-normal (median about 3 days) with 7% reported 1-6 months late.
3. **Money.** ``sum_insured`` is log-normal around a median per claim type; ``claim_amount`` is a
   Beta(1.3, 8) share of it (mean 14%); ``annual_premium`` is a per-type rate of the sum insured;
   ``deductible`` is one of the usual levels.
4. **History and evidence.** ``claim_history`` is Poisson, growing with tenure; ``vehicle_age`` exists
   for auto claims only; ``police_report`` and ``witnesses`` depend on the claim type.
5. **Text.** ``description`` is a per-type sentence plus, for 7% of claims, a *red-flag* phrase and
   for 15% a *minor-concern* phrase.
6. **Risk.** The log-odds of being high risk are ``-5.5 + 3.5 * S``, where S is a non-linear sum of:
   ``+2.2 * sigmoid(12 * (amount/sum_insured - 0.6))`` (claims near the limit),
   ``+0.45 * history + 0.6 * [history >= 3]``, ``+1.1 * [claim within 90 days of policy start]``,
   ``-0.25 * log1p(tenure years)``, ``+0.6 * log1p(report delay / 14 days)``, ``+1.3`` for a red-flag
   phrase and ``+0.45`` for a minor-concern phrase, ``+0.35 * cos(2*pi*(month - 12)/12)``
   (seasonality: December peaks), a region effect, ``+0.9`` for an auto claim on a vehicle older than
   12 years that claims over half the sum insured, and ``+0.55`` for an auto or home claim with no
   police report and no witness. Age, gender and location carry no risk of their own.
7. **Label noise.** 2% of labels are flipped, so the probability of the observed label is
   ``p * 0.98 + (1 - p) * 0.02``. That probability is returned as ``true_probability``; the ROC-AUC
   it reaches on the labels is the best any model can reach (the *oracle AUC*).
8. **Missing data.** 6% of claims carry only the fields of the product brief (as legacy systems
   send them); every optional field is also missing at random 1-5% of the time. A risk term whose
   inputs are missing contributes its population average instead, so the true probability is the
   probability given what the claim records.

About 18% of claims are high risk at ``drift=0``, and the oracle ROC-AUC is about 0.90.

**Drift knob.** ``drift`` (0 = the training population, 1 = strong drift) moves the portfolio the way
a real book shifts: claim amounts grow relative to the sum insured (the Beta's first parameter is
multiplied by ``1 + 0.6*drift``), reports come later (delay times ``1 + drift``), the mix moves
toward urban claims, the south region and auto claims, and customers get younger (``-6*drift`` years).
The risk function itself does not change, so drift alone moves risk only through the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from shared.feature_spec import TARGET_COLUMN

CLAIM_TYPES: Final = np.array(["auto", "home", "health", "travel", "commercial", "life"], dtype=object)
CLAIM_TYPE_P: Final = np.array([0.42, 0.24, 0.16, 0.08, 0.07, 0.03])
LOCATIONS: Final = np.array(["urban", "suburban", "rural"], dtype=object)
LOCATION_P: Final = np.array([0.46, 0.34, 0.20])
REGIONS: Final = np.array(["north", "south", "east", "west", "central"], dtype=object)
REGION_P: Final = np.array([0.22, 0.24, 0.20, 0.20, 0.14])
REGION_EFFECT: Final = np.array([0.0, 0.35, -0.25, 0.15, -0.10])
GENDERS: Final = np.array(["female", "male", "other", "undisclosed"], dtype=object)
GENDER_P: Final = np.array([0.49, 0.49, 0.01, 0.01])
# Per claim type: median sum insured, premium rate, share with a police report.
SUM_INSURED_MEDIAN: Final = np.array([25_000, 300_000, 100_000, 10_000, 500_000, 250_000], dtype=float)
PREMIUM_RATE: Final = np.array([0.04, 0.004, 0.03, 0.02, 0.01, 0.005])
POLICE_REPORT_P: Final = np.array([0.7, 0.6, 0.1, 0.3, 0.6, 0.1])
DEDUCTIBLES: Final = np.array([0, 250, 500, 1000, 2500], dtype=float)
# Winter months see more claims.
MONTH_VOLUME: Final = np.array([1.25, 1.15, 1.0, 0.95, 0.9, 0.85, 0.9, 0.9, 0.95, 1.0, 1.1, 1.3])

BASE_SENTENCES: Final = {
    "auto": [
        "collision at an intersection",
        "rear ended in traffic",
        "hit a barrier on the motorway",
        "damage while parked on the street",
        "windscreen cracked by debris",
    ],
    "home": [
        "water leak from a burst pipe",
        "storm damage to the roof",
        "kitchen fire damage",
        "break in through the back door",
        "subsidence cracks in the walls",
    ],
    "health": [
        "emergency hospital admission",
        "outpatient surgery",
        "physiotherapy after a fall",
        "specialist consultation and scans",
    ],
    "travel": ["flight cancelled and hotel costs", "luggage lost in transit", "medical care abroad"],
    "commercial": [
        "equipment breakdown at the premises",
        "stock damaged by flooding",
        "business interruption after a fire",
    ],
    "life": ["death benefit claim", "terminal illness benefit claim"],
}
RED_FLAG_PHRASES: Final = np.array(
    [
        "claimant requests cash settlement",
        "original receipts unavailable",
        "vehicle declared total loss",
        "all items stolen overnight",
        "claimant insists on urgent payout",
        "repair quote from unlisted garage",
    ],
    dtype=object,
)
MINOR_CONCERN_PHRASES: Final = np.array(
    [
        "incident happened late at night",
        "details changed during follow up call",
        "previous similar incident mentioned",
        "photos provided days later",
    ],
    dtype=object,
)

EPOCH: Final = np.datetime64("2022-01-01")
YEARS: Final = 4
LABEL_NOISE: Final = 0.02
MINIMAL_RECORD_SHARE: Final = 0.06
# Chosen so that about 18% of claims are high risk at drift=0 and the oracle ROC-AUC is about 0.90.
INTERCEPT: Final = -5.5
RISK_SCALE: Final = 3.5


@dataclass(frozen=True)
class SyntheticClaims:
    frame: pd.DataFrame  # the claims as a claims system would send them, plus the label
    true_probability: np.ndarray  # probability of the observed label being 1, per row

    def truth_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"claim_id": self.frame["claim_id"], "true_probability": self.true_probability})


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _shifted(p: np.ndarray, toward: int, amount: float) -> np.ndarray:
    """Move probability mass toward one category by ``amount`` (0..1)."""
    q = p * (1.0 - min(max(amount, 0.0), 1.0))
    q[toward] += 1.0 - q.sum()
    return q


def generate_claims(n: int, seed: int = 0, drift: float = 0.0, id_prefix: str = "CLM") -> SyntheticClaims:
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = np.random.default_rng(seed)
    drift = float(drift)

    type_idx = rng.choice(len(CLAIM_TYPES), size=n, p=_shifted(CLAIM_TYPE_P.copy(), 0, 0.25 * drift))
    is_auto = type_idx == 0
    location = LOCATIONS[rng.choice(3, size=n, p=_shifted(LOCATION_P.copy(), 0, 0.3 * drift))]
    region_idx = rng.choice(5, size=n, p=_shifted(REGION_P.copy(), 1, 0.3 * drift))
    age = np.clip(np.rint(rng.normal(46.0 - 6.0 * drift, 15.0, n)), 18, 95).astype(np.int64)
    gender = GENDERS[rng.choice(4, size=n, p=GENDER_P)]

    # Timing: incident date with winter-heavy volume, policy start before it, report after it.
    month_p = np.tile(MONTH_VOLUME, YEARS) / MONTH_VOLUME.sum() / YEARS
    month_idx = rng.choice(12 * YEARS, size=n, p=month_p)
    month_start = EPOCH.astype("datetime64[M]") + month_idx.astype("timedelta64[M]")
    incident = month_start.astype("datetime64[D]") + rng.integers(0, 28, n).astype("timedelta64[D]")
    incident_month = (month_idx % 12) + 1
    early = rng.random(n) < 0.08
    days_since_start = np.where(early, rng.integers(1, 90, n), 90 + rng.exponential(5 * 365.25, n))
    days_since_start = np.minimum(days_since_start, (age - 18) * 365.25 + 1).astype(np.int64)
    policy_start = incident - days_since_start.astype("timedelta64[D]")
    tenure_years = np.floor(days_since_start / 365.25)
    late = rng.random(n) < 0.07
    delay = rng.lognormal(1.1, 1.0, n) * (1.0 + drift) + np.where(late, rng.uniform(30, 180, n), 0.0)
    delay_days = np.rint(delay).astype(np.int64)
    report = incident + delay_days.astype("timedelta64[D]")

    # Money.
    sum_insured = np.round(SUM_INSURED_MEDIAN[type_idx] * rng.lognormal(0.0, 0.5, n), -2)
    ratio = rng.beta(1.3 * (1.0 + 0.6 * drift), 8.0, n)
    claim_amount = np.round(np.clip(ratio * sum_insured, 50.0, 10_000_000.0), 2)
    ratio = claim_amount / sum_insured
    premium = np.round(sum_insured * PREMIUM_RATE[type_idx] * rng.lognormal(0.0, 0.25, n), 2)
    deductible = np.minimum(DEDUCTIBLES[rng.choice(5, size=n, p=[0.1, 0.3, 0.3, 0.2, 0.1])], sum_insured)

    # History and evidence.
    history = np.minimum(rng.poisson(0.45 + 0.04 * tenure_years), 20)
    vehicle_age = np.where(is_auto, np.minimum(np.rint(rng.gamma(2.0, 3.5, n)), 40), -1).astype(np.int64)
    police_report = rng.random(n) < POLICE_REPORT_P[type_idx]
    witnesses = rng.poisson(0.8, n)

    # Text.
    sentences = np.concatenate([np.array(v, dtype=object) for v in BASE_SENTENCES.values()])
    offsets = np.cumsum([0] + [len(v) for v in BASE_SENTENCES.values()])
    counts = np.diff(offsets)
    base = sentences[offsets[type_idx] + (rng.random(n) * counts[type_idx]).astype(np.int64)]
    phrase_draw = rng.random(n)
    red_flag = phrase_draw < 0.07
    minor = (phrase_draw >= 0.07) & (phrase_draw < 0.22)
    red_pick = RED_FLAG_PHRASES[rng.integers(0, len(RED_FLAG_PHRASES), n)]
    minor_pick = MINOR_CONCERN_PHRASES[rng.integers(0, len(MINOR_CONCERN_PHRASES), n)]
    suffix = np.where(red_flag, "; " + red_pick, np.where(minor, "; " + minor_pick, ""))
    description = base + suffix

    # Which optional fields the claims system left blank, decided before the risk so that the true
    # probability can be the probability *given what is recorded*: a term whose inputs are blank
    # contributes its population average. That makes the oracle AUC the best a model can reach.
    blank = _blank_masks(n, rng)

    def seen(term: np.ndarray, *fields: str) -> np.ndarray:
        observed = ~np.logical_or.reduce([blank[f] for f in fields])
        mean = float(term[observed].mean()) if observed.any() else 0.0
        return np.where(observed, term, mean)

    # Risk.
    logit = INTERCEPT + RISK_SCALE * (
        seen(2.2 * _sigmoid(12.0 * (ratio - 0.6)), "sum_insured")
        + 0.45 * history
        + 0.6 * (history >= 3)
        + seen(1.1 * early, "policy_start_date", "incident_date")
        - 0.25 * np.log1p(tenure_years)
        + seen(0.6 * np.log1p(delay_days / 14.0), "incident_date", "report_date")
        + seen(1.3 * red_flag + 0.45 * minor, "description")
        + seen(0.35 * np.cos(2.0 * np.pi * (incident_month - 12) / 12.0), "incident_date")
        + seen(REGION_EFFECT[region_idx], "region")
        + seen(0.9 * (is_auto & (vehicle_age > 12) & (ratio > 0.5)), "vehicle_age", "sum_insured")
        + seen(0.55 * ((type_idx <= 1) & ~police_report & (witnesses == 0)), "police_report", "witnesses")
    )
    p_clean = _sigmoid(logit)
    true_probability = p_clean * (1.0 - LABEL_NOISE) + (1.0 - p_clean) * LABEL_NOISE
    label = (rng.random(n) < true_probability).astype(np.int64)

    frame = pd.DataFrame(
        {
            "claim_id": pd.array([f"{id_prefix}-{seed:04d}-{i:08d}" for i in range(n)], dtype=object),
            "claim_amount": claim_amount,
            "claim_type": CLAIM_TYPES[type_idx],
            "customer_age": age,
            "policy_tenure": tenure_years.astype(np.int64),
            "claim_history": history.astype(np.int64),
            "location": location,
            "vehicle_age": pd.array(np.where(is_auto, vehicle_age, 0), dtype="Int64"),
            "policy_start_date": policy_start,
            "incident_date": incident,
            "report_date": report,
            "annual_premium": premium,
            "sum_insured": sum_insured,
            "deductible": deductible,
            "region": REGIONS[region_idx],
            "police_report": pd.array(police_report, dtype="boolean"),
            "witnesses": pd.array(witnesses, dtype="Int64"),
            "description": description,
            "gender": gender,
            TARGET_COLUMN: label,
        }
    )
    frame.loc[~is_auto, "vehicle_age"] = pd.NA
    for column, mask in blank.items():
        frame[column] = frame[column].mask(mask)
    return SyntheticClaims(frame=frame, true_probability=true_probability)


_OPTIONAL_MISSING_RATE: Final = {
    "vehicle_age": 0.01,
    "policy_start_date": 0.02,
    "incident_date": 0.01,
    "report_date": 0.02,
    "annual_premium": 0.03,
    "sum_insured": 0.02,
    "deductible": 0.03,
    "region": 0.02,
    "police_report": 0.05,
    "witnesses": 0.05,
    "description": 0.04,
    "gender": 0.05,
}


def _blank_masks(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    minimal = rng.random(n) < MINIMAL_RECORD_SHARE
    return {column: minimal | (rng.random(n) < rate) for column, rate in _OPTIONAL_MISSING_RATE.items()}


def write_claims(claims: SyntheticClaims, path: str | Path, *, truth: str | Path | None = None) -> Path:
    """Write claims as CSV or Parquet (by suffix). True probabilities go to a separate ``truth`` file,
    kept away from the claims folder so no job ever reads them as data."""
    path = Path(path)
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"unsupported claims file type {path.suffix!r}: use .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        claims.frame.to_parquet(path, index=False)
    else:
        claims.frame.to_csv(path, index=False, date_format="%Y-%m-%d")
    if truth is not None:
        Path(truth).parent.mkdir(parents=True, exist_ok=True)
        claims.truth_frame().to_parquet(truth, index=False)
    return path
