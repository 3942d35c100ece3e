"""The out-of-time check: a cutoff that leaves both sides non-empty, and a reason whenever it cannot run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shared.feature_spec import FeatureSpec
from shared.ml.refit import choose_time_split, out_of_time
from shared.ml.report import out_of_time_html
from step_functions.pipeline import parse_hyperparameters
from tests.fraud_table import fraud_spec, fraud_table


def labels(n: int, positives: int) -> np.ndarray:
    return np.array([1] * positives + [0] * (n - positives))


def test_a_coarse_year_column_puts_its_latest_year_in_the_later_set() -> None:
    # The last year holds 30% of the claims: the 0.8 quantile with <= left nothing after it.
    years = pd.Series([2019] * 400 + [2020] * 300 + [2021] * 300)
    y = np.concatenate([labels(400, 30), labels(300, 20), labels(300, 15)])
    split = choose_time_split(years, y)
    assert not split.reason and split.later_from == 2021 and split.earlier_to == 2020
    assert years.quantile(0.8) == 2021  # what the old rule cut at


def test_daily_dates_cut_near_the_last_fifth() -> None:
    days = pd.Series(pd.date_range("2024-01-01", periods=1000, freq="D"))
    split = choose_time_split(days, np.arange(1000) % 7 == 0)
    assert not split.reason
    later = int((days >= split.later_from).sum())
    assert later == 200 and split.earlier_to == pd.Timestamp("2024-01-01") + pd.Timedelta(days=799)


def test_a_later_year_with_one_class_is_not_chosen_and_the_reason_is_given_when_nothing_fits() -> None:
    years = pd.Series([2019] * 500 + [2020] * 300 + [2021] * 200)
    # 2021 has no fraud at all: the later set starts at 2020 instead (both classes on both sides).
    y = np.concatenate([labels(500, 40), labels(300, 20), labels(200, 0)])
    split = choose_time_split(years, y)
    assert split.later_from == 2020 and not split.reason
    # Two years, the later with one class: there is nothing to measure.
    two = pd.Series([2020] * 700 + [2021] * 300)
    split = choose_time_split(two, np.concatenate([labels(700, 50), labels(300, 0)]))
    assert split.reason.startswith("the later period has one class only (300 claims, 0 positive)")
    assert "2021 on" in split.reason
    one = choose_time_split(pd.Series([2021] * 500), labels(500, 40))
    assert one.reason == "every dated claim falls in one period (2021)"


@pytest.fixture(scope="module")
def fraud() -> tuple[FeatureSpec, pd.DataFrame]:
    table = fraud_table(2_500, seed=3)
    table["FraudFound"] = (table["FraudFound"] == "Yes").astype(int)
    return FeatureSpec.model_validate(fraud_spec()), table


SMALL_XGB = parse_hyperparameters({"model_family": "xgboost", "xgb_num_round": 50})


def test_the_check_runs_on_an_integer_year_and_reports_in_and_out_of_time_side_by_side(
    fraud: tuple[FeatureSpec, pd.DataFrame],
) -> None:
    spec, table = fraud
    result = out_of_time(spec, SMALL_XGB, table, "Year")
    assert "skipped" not in result, result
    assert (result["cutoff"], result["later_from"], result["periods"]) == ("2020", "2021", 3)
    assert result["test_rows"] == int((table["Year"] == 2021).sum())
    assert result["train_rows"] + result["in_time_rows"] == int((table["Year"] < 2021).sum())
    # The last year's fraud rate is lower, and both figures are measured on the same refit.
    assert result["metrics"]["prevalence"] < result["in_time_metrics"]["prevalence"]
    assert result["metrics"]["roc_auc"] > 0.6 and result["in_time_metrics"]["roc_auc"] > 0.6
    html = "".join(out_of_time_html(result, {"roc_auc": 0.8}))
    assert 'id="out-of-time-table"' in html and "<th>in time</th><th>out of time</th>" in html
    assert f"{result['metrics']['roc_auc']:.4f}" in html
    assert f"{result['in_time_metrics']['roc_auc']:.4f}" in html


def test_a_check_that_cannot_run_says_why_in_the_result_and_the_report(
    fraud: tuple[FeatureSpec, pd.DataFrame],
) -> None:
    spec, table = fraud
    one_class_later = table.assign(FraudFound=np.where(table["Year"] == 2021, 0, table["FraudFound"]))
    one_class_later = one_class_later[one_class_later["Year"] != 2020]
    result = out_of_time(spec, SMALL_XGB, one_class_later, "Year")
    assert result["skipped"].startswith("the later period has one class only")
    html = "".join(out_of_time_html(result, {"roc_auc": 0.8}))
    assert "Not run on Year: the later period has one class only" in html
    few = out_of_time(spec, SMALL_XGB, table.head(150), "Year")
    assert few["skipped"] == "only 150 claims carry a Year (at least 200 needed)"
    assert "no column 'Year'" in out_of_time(spec, SMALL_XGB, table.drop(columns="Year"), "Year")["skipped"]
