"""Processing job: evaluate a trained model the way a claims manager needs to trust it.

Inputs under ``<base>/input``: ``model/model.tar.gz``, the ``train``, ``validation`` and ``test``
splits of the validate step, the ``features`` screen, and optionally ``champion/*.tar.gz`` (the
model now serving, scored on the same test set for the champion gate), ``truth`` (true
probabilities of generated claims) and ``tuning/trials.json`` (the local tuner's trials and budget).
Outputs under ``<base>/output/evaluation``: ``evaluation.json`` and a self-contained ``report.html``.

With a champion and the claims lake (``CLAIMS_RISK_LAKE_*``), the last ``--replay-days`` of captured
traffic are replayed through both models (:mod:`shared.ml.replay`): how many claims would change
decision, at what expected cost, and which flip most.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from shared.adapters.artifacts import split_s3_uri
from shared.adapters.lake import lake_from_env
from shared.decision import DecisionCosts
from shared.feature_spec import FeatureSpec
from shared.lake import DEFAULT_REPLAY_DAYS, LakeError
from shared.metric_lines import metric_line
from shared.ml.evaluation import (
    classification_metrics,
    curves,
    group_metrics,
    protected_groups,
    reliability,
    threshold_comparison,
)
from shared.ml.frames import read_parquet_folder
from shared.ml.model import RiskModel, unpack_model
from shared.ml.refit import cross_validate, out_of_time
from shared.ml.replay import replay, skipped
from shared.ml.report import render_report

IMPORTANCE_ROWS = 2_000
EVALUATION_METRICS = ("roc_auc", "pr_auc", "f1", "brier", "expected_cost")


def log(message: str) -> None:
    print(f"[evaluate] {message}", flush=True)


def evaluate(
    model: RiskModel,
    splits: dict[str, pd.DataFrame],
    truth: pd.DataFrame | None,
    cv_folds: int,
    seed: int,
    champion: RiskModel | None = None,
) -> dict[str, Any]:
    spec = model.spec
    target = spec.target.column
    test = splits["test"]
    y = test[target].to_numpy(np.int64)
    matrix = model.encoder.transform(test)
    scores = model.probabilities(matrix)
    threshold = model.manifest.threshold
    costs = model.manifest.costs
    log(f"test: {len(test):,} claims; threshold {threshold:.3f}")

    sample = matrix[:IMPORTANCE_ROWS]
    importance = np.abs(model.contributions(sample)).mean(axis=0)
    names = model.encoder.factor_names
    order = np.argsort(-importance)
    result: dict[str, Any] = {
        "model": {
            "version": model.version,
            "family": model.manifest.family,
            "spec": spec.name,
            "data_sha256": model.manifest.lineage.data_sha256,
            "code_version": model.manifest.lineage.code_version,
            "explanation_method": model.manifest.explanation_method,
            "hyperparameters": model.manifest.lineage.hyperparameters,
        },
        "costs": costs.model_dump(),
        # The spec's own gate settings travel with the model's spec: the gates step applies them.
        "spec_gates": dict(spec.gates or {}),
        "test": classification_metrics(y, scores, threshold, costs),
        "threshold_comparison": threshold_comparison(y, scores, threshold, costs),
        "curves": curves(y, scores),
        "reliability": reliability(y, scores),
        "global_importance": [
            {"factor": names[j], "mean_abs_contribution": float(importance[j])} for j in order
        ],
        "fairness": {
            attr: group_metrics(y, scores, threshold, groups)
            for attr, groups in protected_groups(spec, test).items()
        },
        "oracle_roc_auc": None,
    }
    if truth is not None:
        joined = test[[spec.id_column, target]].merge(
            truth, left_on=spec.id_column, right_on="claim_id", how="inner"
        )
        if len(joined) == len(test):
            result["oracle_roc_auc"] = float(roc_auc_score(joined[target], joined["true_probability"]))
    if champion is not None:
        if champion.spec.name == spec.name:
            champion_scores = champion.scores(test)
            result["champion"] = {
                "version": champion.version,
                "family": champion.manifest.family,
                "test": classification_metrics(y, champion_scores, champion.manifest.threshold, costs),
            }
            log(
                f"champion {champion.version}: test PR-AUC {result['champion']['test']['pr_auc']:.4f} "
                f"against {result['test']['pr_auc']:.4f}"
            )
        else:
            log(f"champion {champion.version} uses spec {champion.spec.name!r}: not comparable, skipped")
    every_row = pd.concat([splits["train"], splits["validation"], test], ignore_index=True)
    hyperparameters = dict(model.manifest.lineage.hyperparameters)
    if cv_folds >= 2:
        log(f"stratified {cv_folds}-fold cross-validation on {len(every_row):,} claims")
        result["cross_validation"] = cross_validate(spec, hyperparameters, every_row, cv_folds, seed, costs)
    result["out_of_time"] = out_of_time_section(spec, hyperparameters, every_row, seed, costs)
    return result


def out_of_time_section(
    spec: FeatureSpec, hyperparameters: dict[str, Any], rows: pd.DataFrame, seed: int, costs: DecisionCosts
) -> dict[str, Any]:
    """The out-of-time check on the spec's time column, or why it did not run: never silently absent."""
    if not spec.event_date:
        section: dict[str, Any] = {"skipped": "the spec names no time column (event_date)"}
    else:
        log(f"out-of-time check on {spec.event_date}")
        section = out_of_time(spec, hyperparameters, rows, spec.event_date, seed=seed, costs=costs)
    if "skipped" in section:
        log(f"out-of-time check not run: {section['skipped']}")
    else:
        log(
            f"out-of-time: trained on {section['train_rows']:,} claims up to {section['cutoff']}, "
            f"ROC-AUC {section['in_time_metrics']['roc_auc']:.4f} in time, "
            f"{section['metrics']['roc_auc']:.4f} on the {section['test_rows']:,} claims from "
            f"{section['later_from']} on"
        )
    return section


# In AWS the state machine names the serving model's copy here; the local runner mounts a folder.
CHAMPION_URI_ENV = "CLAIMS_RISK_CHAMPION_URI"


def champion_tarball(channel: Path, workdir: Path) -> Path | None:
    """The model to beat: the ``champion`` input if mounted, else the object at
    ``$CLAIMS_RISK_CHAMPION_URI`` if it exists, else none (the first model has no champion)."""
    mounted = sorted(channel.glob("*.tar.gz")) if channel.is_dir() else []
    if mounted:
        return mounted[0]
    uri = os.environ.get(CHAMPION_URI_ENV, "")
    if not uri:
        return None
    import boto3
    from botocore.exceptions import ClientError

    bucket, key = split_s3_uri(uri)
    target = workdir / "champion.tar.gz"
    try:
        boto3.client("s3").download_file(bucket, key, str(target))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
            log(f"no champion at {uri}: this is the first model")
            return None
        raise
    log(f"champion from {uri}")
    return target


def replay_section(model: RiskModel, champion: RiskModel | None, days: int) -> dict[str, Any]:
    """Live traffic through both models, or why there is no replay."""
    if days <= 0:
        return skipped("replay off (replay_days 0)")
    if champion is None:
        return skipped("no champion yet: nothing to compare against")
    if champion.spec.name != model.spec.name:
        return skipped(f"the champion uses spec {champion.spec.name!r}: its traffic does not fit")
    try:
        lake = lake_from_env()
        if lake is None:
            return skipped("no claims lake configured (CLAIMS_RISK_LAKE_*)")
        section = replay(lake, champion, model, days)
    except LakeError as error:
        log(f"replay skipped: {error}")
        return skipped(f"the lake could not be read: {error}")
    rate = section["flip_rate"]
    log(
        f"replay of {section['claims']:,} claims from the last {days} days: "
        + (f"{section['flips']:,} would change decision ({rate:.2%})" if rate is not None else "no traffic")
    )
    return section


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(args.base_dir)
    inputs = base / "input"
    tarballs = sorted((inputs / "model").glob("*.tar.gz"))
    if not tarballs:
        raise FileNotFoundError(f"no model.tar.gz in {inputs / 'model'}")
    with tempfile.TemporaryDirectory() as tmp:
        model = RiskModel.load(unpack_model(tarballs[0], Path(tmp) / "challenger"))
        splits = {name: read_parquet_folder(inputs / name) for name in ("train", "validation", "test")}
        truth_files = sorted((inputs / "truth").glob("*.parquet")) if (inputs / "truth").is_dir() else []
        truth = pd.concat([pd.read_parquet(f) for f in truth_files]) if truth_files else None
        champion_file = champion_tarball(inputs / "champion", Path(tmp))
        champion = (
            RiskModel.load(unpack_model(champion_file, Path(tmp) / "champion")) if champion_file else None
        )
        result = evaluate(model, splits, truth, args.cv_folds, args.seed, champion)
        result["replay"] = replay_section(model, champion, args.replay_days)
    tuning_file = inputs / "tuning" / "trials.json"
    if tuning_file.is_file():  # the local tuner's record: trials run against asked, time against budget
        trials = json.loads(tuning_file.read_text(encoding="utf-8"))
        result["tuning"] = {k: trials.get(k) for k in ("budget", "best_cv_pr_auc", "best_per_family")}
    screen_file = inputs / "features" / "feature_report.json"
    if screen_file.is_file():
        screen = json.loads(screen_file.read_text(encoding="utf-8"))
        screen.pop("encoder", None)  # the fitted levels are in the model artifact already
        result["feature_screen"] = screen
    out = base / "output" / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out / "report.html").write_text(render_report(result), encoding="utf-8")
    for key in EVALUATION_METRICS:
        print(metric_line(f"test:{key}", float(result["test"][key])), flush=True)
    if result.get("cross_validation"):
        print(metric_line("cv:roc_auc", result["cross_validation"]["roc_auc"]["mean"]), flush=True)
        print(metric_line("cv:f1", result["cross_validation"]["f1"]["mean"]), flush=True)
    log(f"report written to {out / 'report.html'}")
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-dir", default="/opt/ml/processing")
    parser.add_argument("--cv-folds", type=int, default=5, help="0 skips cross-validation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--replay-days", type=int, default=DEFAULT_REPLAY_DAYS, help="days of live traffic replayed; 0: none"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except (FileNotFoundError, ValueError) as error:
        print(f"[evaluate] FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
