"""Processing job: build the model inputs from the feature spec and screen them before any training.

Inputs under ``<base>/input``: the ``train`` and ``validation`` splits of the validate step (each with
its ``feature_spec.json``). Output under ``<base>/output/features``: ``feature_report.json`` with, for
every model input, its missing share, its power alone (univariate ROC-AUC) and how strongly it stands
in for each protected attribute (correlation ratio), plus the encoder fitted on the training split.

Two screens guard the run:
- target leakage: an input that alone separates the classes almost perfectly stops the run, since no
  honest claim field predicts risk that well;
- proxies: an input that largely encodes a protected attribute is reported, and the fairness gate
  judges the model's outcomes.
Protected attributes are never model inputs (the spec forbids it; this job checks it again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from shared.feature_spec import FeatureSpec
from shared.metric_lines import metric_line
from shared.ml.evaluation import UNKNOWN_GROUP, protected_groups
from shared.ml.features import fit_encoder, input_columns
from shared.ml.frames import read_parquet_folder

LEAKAGE_AUC: Final = 0.99  # a single input this predictive is almost surely derived from the outcome
PROXY_STRENGTH: Final = 0.5  # correlation ratio above which an input is reported as a proxy
SCREEN_ROWS: Final = 100_000  # rows sampled for the screens; enough for stable figures


class FeatureScreenFailed(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[features] {message}", flush=True)


def univariate_auc(column: np.ndarray, y: np.ndarray) -> float:
    """ROC-AUC of one input alone, direction-free (0.5 = no signal, 1 = separates the classes)."""
    values = np.where(np.isnan(column), np.nanmedian(column) if np.isfinite(column).any() else 0.0, column)
    if np.ptp(values) == 0:
        return 0.5
    auc = float(roc_auc_score(y, values))
    return max(auc, 1.0 - auc)


def correlation_ratio(column: np.ndarray, groups: np.ndarray) -> float:
    """How much of an input's variance the protected groups explain (eta, 0 to 1)."""
    known = ~np.isnan(column) & (groups != UNKNOWN_GROUP)
    values, labels = column[known], groups[known]
    if len(values) < 2 or np.var(values) == 0:
        return 0.0
    mean = values.mean()
    between = sum((labels == g).sum() * (values[labels == g].mean() - mean) ** 2 for g in np.unique(labels))
    return float(np.sqrt(between / (np.var(values) * len(values))))


def screen(spec: FeatureSpec, train: pd.DataFrame, seed: int) -> dict[str, Any]:
    if len(train) > SCREEN_ROWS:
        train = train.sample(SCREEN_ROWS, random_state=seed).reset_index(drop=True)
    y = train[spec.target.column].to_numpy(np.int64)
    encoder = fit_encoder(spec, train, y)
    protected = {c.name for c in spec.protected_columns}
    inputs = set(input_columns(encoder))
    overlap = sorted(protected & inputs)
    if overlap:
        raise FeatureScreenFailed(f"protected attributes {overlap} must not be model inputs")
    matrix = encoder.transform(train).astype(np.float64)
    groups = protected_groups(spec, train)
    factors: dict[str, dict[str, Any]] = {}
    for j, column in enumerate(encoder.columns):
        values = matrix[:, j]
        entry = factors.setdefault(
            column.factor,
            {"factor": column.factor, "encoded_columns": 0, "missing_share": 0.0, "univariate_auc": 0.5}
            | {"proxy_strength": dict.fromkeys(groups, 0.0)},
        )
        entry["encoded_columns"] += 1
        entry["missing_share"] = max(entry["missing_share"], float(np.isnan(values).mean()))
        entry["univariate_auc"] = max(entry["univariate_auc"], univariate_auc(values, y))
        for attribute, labels in groups.items():
            strength = correlation_ratio(values, labels)
            entry["proxy_strength"][attribute] = max(entry["proxy_strength"][attribute], strength)
    rows = sorted(factors.values(), key=lambda f: -f["univariate_auc"])
    leaks = [f for f in rows if f["univariate_auc"] >= LEAKAGE_AUC]
    proxies = [
        {"factor": f["factor"], "attribute": a, "strength": s}
        for f in rows
        for a, s in f["proxy_strength"].items()
        if s >= PROXY_STRENGTH
    ]
    return {
        "spec": spec.name,
        "rows_screened": len(train),
        "model_inputs": sorted(inputs),
        "protected_attributes": sorted(protected),
        "encoded_columns": len(encoder.columns),
        "leakage_auc_bound": LEAKAGE_AUC,
        "proxy_strength_bound": PROXY_STRENGTH,
        "factors": rows,
        "leaks": [f["factor"] for f in leaks],
        "proxies": proxies,
        "encoder": json.loads(encoder.model_dump_json()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(args.base_dir)
    spec = FeatureSpec.from_file(base / "input" / "train" / "feature_spec.json")
    train = read_parquet_folder(base / "input" / "train")
    log(f"spec {spec.name!r}: screening {len(spec.feature_columns)} feature columns on {len(train):,} claims")
    report = screen(spec, train, args.seed)
    out = base / "output" / "features"
    out.mkdir(parents=True, exist_ok=True)
    (out / "feature_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    for f in report["factors"][:5]:
        log(f"strongest alone: {f['factor']} (ROC-AUC {f['univariate_auc']:.3f})")
    for p in report["proxies"]:
        log(f"proxy warning: {p['factor']} stands in for {p['attribute']} (strength {p['strength']:.2f})")
    print(metric_line("features:encoded_columns", float(report["encoded_columns"])), flush=True)
    print(metric_line("features:proxies", float(len(report["proxies"]))), flush=True)
    if report["leaks"]:
        raise FeatureScreenFailed(
            f"probable target leakage: {report['leaks']} alone separate the classes "
            f"(univariate ROC-AUC ≥ {LEAKAGE_AUC}); remove them from the spec or fix the data"
        )
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-dir", default="/opt/ml/processing")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except (FeatureScreenFailed, FileNotFoundError, ValueError) as error:
        print(f"[features] FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
