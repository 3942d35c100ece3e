"""Fit a configuration on some rows and measure it on others, exactly as the training job would.

Used by the evaluation step for stratified K-fold cross-validation and the out-of-time check: the
encoder, the model, the Platt calibration and the cost-based threshold are all refitted on the
fitting rows only (an inner split serves early stopping, calibration and the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from shared.decision import DEFAULT_COSTS, DecisionCosts
from shared.feature_spec import FeatureSpec
from shared.ml.evaluation import choose_threshold, classification_metrics
from shared.ml.families import TrainingData, fit_family
from shared.ml.features import fit_encoder
from shared.ml.model import Calibration


def fit_and_score(
    spec: FeatureSpec,
    hyperparameters: dict[str, Any],
    fit_rows: pd.DataFrame,
    holdouts: dict[str, pd.DataFrame],
    costs: DecisionCosts = DEFAULT_COSTS,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Fit once on ``fit_rows`` and measure the same model on each holdout, by name."""
    target = spec.target.column
    inner_fit, inner_val = train_test_split(
        fit_rows, test_size=0.15, stratify=fit_rows[target], random_state=seed
    )
    y_fit, y_val = inner_fit[target].to_numpy(np.int64), inner_val[target].to_numpy(np.int64)
    encoder = fit_encoder(spec, inner_fit, y_fit)
    data = TrainingData(
        encoder.transform(inner_fit), y_fit, encoder.transform(inner_val), y_val, encoder.feature_names
    )
    family = fit_family(hyperparameters["model_family"], data, hyperparameters)
    calibration = Calibration.fit(family.margin(data.x_val), y_val)
    threshold = choose_threshold(y_val, calibration.apply(family.margin(data.x_val)), costs)
    out = {}
    for name, rows in holdouts.items():
        scores = calibration.apply(family.margin(encoder.transform(rows)))
        out[name] = classification_metrics(rows[target].to_numpy(np.int64), scores, threshold, costs)
    return out


def fit_and_evaluate(
    spec: FeatureSpec,
    hyperparameters: dict[str, Any],
    fit_rows: pd.DataFrame,
    holdout_rows: pd.DataFrame,
    costs: DecisionCosts = DEFAULT_COSTS,
    seed: int = 0,
) -> dict[str, Any]:
    return fit_and_score(spec, hyperparameters, fit_rows, {"holdout": holdout_rows}, costs, seed)["holdout"]


def cross_validate(
    spec: FeatureSpec,
    hyperparameters: dict[str, Any],
    rows: pd.DataFrame,
    folds: int,
    seed: int = 0,
    costs: DecisionCosts = DEFAULT_COSTS,
) -> dict[str, Any]:
    """Stratified K-fold over all labelled rows: mean and spread of the metrics a claims manager reads."""
    y = rows[spec.target.column].to_numpy(np.int64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    per_fold = [
        fit_and_evaluate(spec, hyperparameters, rows.iloc[fit_idx], rows.iloc[hold_idx], costs, seed)
        for fit_idx, hold_idx in splitter.split(np.zeros(len(y)), y)
    ]
    summary: dict[str, Any] = {"folds": folds, "rows": len(rows)}
    for key in ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier", "expected_cost"):
        values = [float(m[key]) for m in per_fold]
        summary[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "per_fold": values}
    return summary


# The out-of-time check: the later set aims at this share of the dated claims, and each side must be
# large enough, with both classes, to fit on (earlier) and to measure (later).
LATER_SHARE: Final = 0.2
MIN_DATED_ROWS: Final = 200
MIN_LATER_ROWS: Final = 50
MIN_EARLIER_ROWS: Final = 100
MIN_CLASS_ROWS: Final = 5  # per class on each side: the fit's stratified inner splits need a few
IN_TIME_SHARE: Final = 0.2  # of the earlier claims, held out to measure the same model in time


def time_axis(values: pd.Series) -> pd.Series:
    """The time column as comparable values: dates as datetimes, an integer year (or any number,
    even read as text) as numbers."""
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().sum() >= values.notna().sum():
        return numbers
    return pd.to_datetime(values, errors="coerce", format="ISO8601")


def _period(value: Any) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d")
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


@dataclass(frozen=True)
class TimeSplit:
    """Where the later set starts, or why no start works."""

    later_from: Any = None  # the first period of the later set
    earlier_to: Any = None  # the last period of the earlier set
    periods: int = 0
    reason: str = ""


def choose_time_split(times: pd.Series, y: np.ndarray) -> TimeSplit:
    """The later set is every claim from some period on. Candidates start at each period but the
    first, so both sides are never empty; among those whose sides can be fitted and measured, the
    one whose later share is closest to :data:`LATER_SHARE` wins. On a coarse column (an integer
    year whose last year holds 30% of the claims) that is the latest period; on daily dates it is
    about the last fifth."""
    frame = pd.DataFrame({"t": times.to_numpy(), "y": y})
    per = frame.groupby("t", sort=True)["y"].agg(["size", "sum"])
    if len(per) < 2:
        only = _period(per.index[0]) if len(per) else "none"
        return TimeSplit(periods=len(per), reason=f"every dated claim falls in one period ({only})")
    total, positives = int(per["size"].sum()), int(per["sum"].sum())
    # Claims (and positives) from each period on: the later set if it started there.
    later_n = per["size"][::-1].cumsum()[::-1].to_numpy()[1:]
    later_pos = per["sum"][::-1].cumsum()[::-1].to_numpy()[1:]
    earlier_n, earlier_pos = total - later_n, positives - later_pos
    problems = np.full(len(later_n), "", dtype=object)
    for i in range(len(later_n)):
        problems[i] = _split_problem(
            int(earlier_n[i]), int(earlier_pos[i]), int(later_n[i]), int(later_pos[i])
        )
    closeness = np.abs(later_n / total - LATER_SHARE)
    usable = np.flatnonzero(problems == "")
    pick = usable[np.argmin(closeness[usable])] if len(usable) else int(np.argmin(closeness))
    split = TimeSplit(per.index[pick + 1], per.index[pick], len(per))
    if not len(usable):
        later = f"{_period(split.later_from)} on"
        return TimeSplit(split.later_from, split.earlier_to, len(per), f"{problems[pick]} ({later})")
    return split


def _split_problem(earlier_n: int, earlier_pos: int, later_n: int, later_pos: int) -> str:
    for side, n, pos, least in (
        ("later", later_n, later_pos, MIN_LATER_ROWS),
        ("earlier", earlier_n, earlier_pos, MIN_EARLIER_ROWS),
    ):
        if pos in (0, n):
            return f"the {side} period has one class only ({n:,} claims, {pos:,} positive)"
        if n < least:
            return f"the {side} period has {n:,} claims (at least {least} needed)"
        if min(pos, n - pos) < MIN_CLASS_ROWS:
            return (
                f"the {side} period has {min(pos, n - pos)} claims of one class (at least {MIN_CLASS_ROWS})"
            )
    return ""


def out_of_time(
    spec: FeatureSpec,
    hyperparameters: dict[str, Any],
    rows: pd.DataFrame,
    date_column: str,
    seed: int = 0,
    costs: DecisionCosts = DEFAULT_COSTS,
) -> dict[str, Any]:
    """Train on the earlier claims; measure the same model on held-out earlier claims (in time) and on
    the later ones (out of time). When the time column cannot support it, ``skipped`` says why."""
    if date_column not in rows.columns:
        return {"date_column": date_column, "skipped": f"the data have no column {date_column!r}"}
    times = time_axis(rows[date_column])
    dated = rows[times.notna()]
    times = times[times.notna()]
    if len(dated) < MIN_DATED_ROWS:
        return {
            "date_column": date_column,
            "skipped": f"only {len(dated):,} claims carry a {date_column} (at least {MIN_DATED_ROWS} needed)",
        }
    target = spec.target.column
    split = choose_time_split(times, dated[target].to_numpy(np.int64))
    if split.reason:
        return {"date_column": date_column, "periods": split.periods, "skipped": split.reason}
    is_later = (times >= split.later_from).to_numpy()
    earlier, later = dated[~is_later], dated[is_later]
    fit_rows, in_time = train_test_split(
        earlier, test_size=IN_TIME_SHARE, stratify=earlier[target], random_state=seed
    )
    measured = fit_and_score(
        spec, hyperparameters, fit_rows, {"in_time": in_time, "out_of_time": later}, costs, seed
    )
    return {
        "date_column": date_column,
        "periods": split.periods,
        "cutoff": _period(split.earlier_to),
        "later_from": _period(split.later_from),
        "rule": f"the later set is every claim from the period whose share of claims from there on is "
        f"closest to {LATER_SHARE:.0%}, both sides non-empty with both classes",
        "train_rows": len(fit_rows),
        "in_time_rows": len(in_time),
        "test_rows": len(later),
        "in_time_metrics": measured["in_time"],
        "metrics": measured["out_of_time"],
    }
