"""The drift statistics: PSI, KS, chi-square, missing rates, and the alarm decision they feed."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from benchmarks.bench_monitoring import (
    MOVED_BY_DRIFT,
    Reference,
    batch_report,
    claim_records,
    detection,
    reference,
)
from shared.alarms import (
    FEATURE_DRIFT_METRIC,
    MISSING_RATE_METRIC,
    MONITORING_NAMESPACE,
    PREDICTION_DRIFT_METRIC,
    alarm,
)
from shared.ml.drift import (
    EPSILON,
    FEATURE_DRIFT_ALARM,
    MISSING_RATE_ALARM,
    OTHER_LEVEL,
    PREDICTION_DRIFT_ALARM,
    DriftAccumulator,
    DriftReport,
    FeatureDrift,
    as_days,
    as_floats,
    bin_index,
    binned_ks,
    breaches,
    chi_square,
    psi,
)
from shared.ml.synthetic import generate_claims


@pytest.fixture(scope="module")
def ref() -> Reference:
    return reference(rows=20_000, seed=1)


@pytest.fixture(scope="module")
def clean_records() -> list[dict[str, Any]]:
    claims = generate_claims(3_000, seed=11)
    return claim_records(claims.frame)


def _report(ref: Reference, records: list[dict[str, Any]], scores: Any = ()) -> DriftReport:
    accumulator = DriftAccumulator(ref.spec, ref.statistics)
    accumulator.add_records(records)
    accumulator.add_scores(np.asarray(scores, dtype=float))
    return accumulator.report()


def _feature(report: DriftReport, name: str) -> FeatureDrift:
    return next(f for f in report.features if f.name == name)


# ---------------------------------------------------------------------------------------------
# The statistics on arrays.


def test_psi_is_zero_for_the_same_distribution_and_matches_the_formula_for_a_shift() -> None:
    assert psi(np.array([0.2, 0.3, 0.5]), np.array([0.2, 0.3, 0.5])) == 0.0
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)


def test_psi_of_an_empty_bin_is_bounded_by_the_epsilon_floor() -> None:
    value = psi(np.array([0.5, 0.5]), np.array([1.0, 0.0]))
    assert math.isfinite(value)
    assert value == pytest.approx(0.5 * math.log(2) + (EPSILON - 0.5) * math.log(EPSILON / 0.5))


def test_values_fall_in_the_baseline_bins_as_np_histogram_counted_them_and_outliers_in_the_outer_ones() -> (
    None
):
    rng = np.random.default_rng(0)
    baseline = rng.normal(size=5_000)
    edges = list(np.quantile(baseline, np.linspace(0, 1, 11)))
    inside = rng.uniform(edges[0], edges[-1], size=2_000)
    counts, _ = np.histogram(inside, bins=edges)
    assert np.array_equal(np.bincount(bin_index(inside, edges), minlength=10), counts)
    assert list(bin_index(np.array([edges[0] - 100, edges[-1] + 100]), edges)) == [0, 9]


def test_binned_ks_finds_a_shift_of_a_quarter_sd_and_not_the_same_distribution() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.normal(size=50_000)
    edges = list(np.quantile(baseline, np.linspace(0, 1, 11)))
    shares = np.histogram(baseline, bins=edges)[0] / len(baseline)

    def counts(sample: np.ndarray) -> np.ndarray:
        return np.bincount(bin_index(sample, edges), minlength=10)

    same_distance, same_p = binned_ks(shares, counts(rng.normal(size=5_000)), len(baseline))
    shifted_distance, shifted_p = binned_ks(shares, counts(rng.normal(0.25, size=5_000)), len(baseline))
    assert same_p > 0.01 and same_distance < 0.03
    assert shifted_p < 1e-6 and shifted_distance > 0.08


def test_chi_square_accepts_the_baseline_mix_and_rejects_a_moved_one() -> None:
    shares = np.array([0.5, 0.3, 0.2])
    _, same_p = chi_square(shares, np.array([500, 300, 200]))
    statistic, moved_p = chi_square(shares, np.array([400, 300, 300]))
    assert same_p == pytest.approx(1.0)
    assert statistic == pytest.approx(100**2 / 500 + 0 + 100**2 / 200)
    assert moved_p < 1e-6


def test_captured_numbers_and_dates_convert_fast_and_wrong_values_are_counted_not_fatal() -> None:
    numbers, wrong = as_floats([1, "2.5", None, 4.0])
    assert np.array_equal(numbers, [1.0, 2.5, np.nan, 4.0], equal_nan=True) and wrong == 0
    numbers, wrong = as_floats([1, "lots", None, "", True])
    assert np.array_equal(numbers, [1.0, np.nan, np.nan, np.nan, np.nan], equal_nan=True) and wrong == 2
    days, wrong = as_days(["2024-01-10", None, "not a date", "2024-01-12T08:00:00"])
    assert list(days.astype(str)) == ["2024-01-10", "NaT", "NaT", "2024-01-12"] and wrong == 1


# ---------------------------------------------------------------------------------------------
# The accumulator on captured claims.


def test_claims_fed_in_chunks_give_the_same_report_as_fed_at_once(
    ref: Reference, clean_records: list[dict[str, Any]]
) -> None:
    whole = _report(ref, clean_records, np.linspace(0, 1, len(clean_records)))
    accumulator = DriftAccumulator(ref.spec, ref.statistics)
    for start in range(0, len(clean_records), 700):
        accumulator.add_records(clean_records[start : start + 700])
    accumulator.add_scores(np.linspace(0, 1, len(clean_records)))
    assert accumulator.report() == whole


def test_clean_claims_stay_under_every_alarm_threshold(
    ref: Reference, clean_records: list[dict[str, Any]]
) -> None:
    report = _report(ref, clean_records)
    assert report.claims == len(clean_records)
    assert report.feature_drift_psi_max < FEATURE_DRIFT_ALARM.threshold / 5
    assert report.missing_rate_increase_max < MISSING_RATE_ALARM.threshold / 3
    assert not report.alarmed and report.violations() == []


def test_a_field_missing_more_often_is_a_completeness_violation_and_an_absent_one_a_missing_column(
    ref: Reference, clean_records: list[dict[str, Any]]
) -> None:
    records = []
    for i, claim in enumerate(clean_records):
        record = {k: v for k, v in claim.items() if k != "deductible"}  # never sent any more
        if i % 3 == 0:  # sent for two claims in three
            record.pop("sum_insured", None)
        records.append(record)
    report = _report(ref, records)
    checks = {(v.feature_name, v.constraint_check_type) for v in report.violations()}
    assert ("sum_insured", "completeness_check") in checks
    assert ("deductible", "missing_column_check") in checks
    assert _feature(report, "deductible").current_missing_rate == 1.0
    assert report.metric_values()[MISSING_RATE_METRIC] > MISSING_RATE_ALARM.threshold
    assert "missing-values" in report.alarms()


def test_a_new_category_counts_as_other_and_is_a_categorical_values_violation(
    ref: Reference, clean_records: list[dict[str, Any]]
) -> None:
    records = [r | {"claim_type": "pet"} if i % 2 else r for i, r in enumerate(clean_records)]
    report = _report(ref, records)
    claim_type = _feature(report, "claim_type")
    assert claim_type.bins[-1] == OTHER_LEVEL
    assert claim_type.current_shares[-1] == pytest.approx(0.5, abs=0.01)
    checks = {(v.feature_name, v.constraint_check_type) for v in report.violations()}
    assert ("claim_type", "categorical_values_check") in checks
    assert ("claim_type", "baseline_drift_check") in checks


def test_a_boolean_whose_share_of_true_moves_drifts(
    ref: Reference, clean_records: list[dict[str, Any]]
) -> None:
    records = [r | {"police_report": True} for r in clean_records]
    police = _feature(_report(ref, records), "police_report")
    assert police.kind == "boolean" and police.bins == ["false", "true"]
    assert police.current_shares == [0.0, 1.0]
    assert police.psi > FEATURE_DRIFT_ALARM.threshold and police.p_value < 1e-6


def test_values_of_the_wrong_type_are_a_data_type_violation(
    ref: Reference, clean_records: list[dict[str, Any]]
) -> None:
    records = [r | {"witnesses": "several"} if i % 10 == 0 else r for i, r in enumerate(clean_records)]
    report = _report(ref, records)
    assert _feature(report, "witnesses").wrong_type == len(range(0, len(records), 10))
    assert ("witnesses", "data_type_check") in {
        (v.feature_name, v.constraint_check_type) for v in report.violations()
    }


def test_scores_shifted_upward_alarm_on_prediction_drift(
    ref: Reference, clean_records: list[dict[str, Any]]
) -> None:
    baseline_scores = generate_claims(3_000, seed=12).true_probability
    assert not _report(ref, clean_records, baseline_scores).prediction_drifted
    report = _report(ref, clean_records, np.minimum(baseline_scores * 2.5, 1.0))
    assert report.prediction_drifted and report.alarms() == ["prediction-drift"]
    [violation] = report.violations()
    assert (violation.feature_name, violation.constraint_check_type) == ("risk_score", "baseline_drift_check")


# ---------------------------------------------------------------------------------------------
# The alarm decision is the CloudWatch alarms' own.


def test_the_thresholds_are_the_cloudwatch_alarm_definitions() -> None:
    assert FEATURE_DRIFT_ALARM is alarm("feature-drift")
    assert PREDICTION_DRIFT_ALARM is alarm("prediction-drift")
    assert MISSING_RATE_ALARM is alarm("missing-values")
    for definition, metric in (
        (FEATURE_DRIFT_ALARM, FEATURE_DRIFT_METRIC),
        (PREDICTION_DRIFT_ALARM, PREDICTION_DRIFT_METRIC),
        (MISSING_RATE_ALARM, MISSING_RATE_METRIC),
    ):
        assert (definition.namespace, definition.metric) == (MONITORING_NAMESPACE, metric)
        # GreaterThanThreshold: the threshold itself does not alarm, anything above does.
        assert not breaches(definition, definition.threshold)
        assert breaches(definition, definition.threshold + 1e-9)


# ---------------------------------------------------------------------------------------------
# Detection quality on the generator's drift knob, at small sizes (the benchmark runs 20 x 5k).


def test_clean_batches_do_not_alarm(ref: Reference) -> None:
    clean = detection(ref, 0.0, batches=6, rows=2_000, first_seed=500)
    assert clean.alarms == 0, [r.alarms() for r in clean.reports]


def test_drifted_batches_alarm_and_name_only_features_the_knob_moves(ref: Reference) -> None:
    drifted = detection(ref, 1.0, batches=6, rows=2_000, first_seed=600)
    assert drifted.alarms == 6, drifted.psi_max()
    assert drifted.wrongly_named == []
    named = drifted.named()
    # The report delay doubles at drift=1: the strongest move, named every time.
    assert named.get("days_incident_to_report") == 6, named
    assert set(named) <= MOVED_BY_DRIFT


def test_one_batch_report_names_the_features_in_its_violations(ref: Reference) -> None:
    report = batch_report(ref, generate_claims(2_000, seed=700, drift=1.0))
    drift_violations = {
        v.feature_name for v in report.violations() if v.constraint_check_type == "baseline_drift_check"
    }
    assert set(report.drifted_features) <= drift_violations
    assert "days_incident_to_report" in drift_violations
