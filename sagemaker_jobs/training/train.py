"""Training job: fit the encoder and the model, choose the threshold, write the model artifact.

Runs under SageMaker's training contract (``python -m sagemaker_jobs.training.train``):
channels ``train`` and ``validation`` (and optionally ``test``) from ``SM_CHANNEL_<NAME>``,
hyperparameters from ``SM_HPS`` or ``hyperparameters.json``, the artifact into ``SM_MODEL_DIR``,
metrics on stdout in the format the tuning job's regexes read, and the reason for a failure in
``/opt/ml/output/failure``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sagemaker_jobs.environment import TrainingEnvironment, training_environment
from shared.decision import DecisionCosts
from shared.feature_spec import FeatureSpec, load_spec
from shared.metric_lines import metric_line
from shared.ml.baseline import baseline_statistics
from shared.ml.evaluation import choose_threshold, classification_metrics
from shared.ml.external_memory import (
    external_matrix,
    label_counts,
    needs_external_memory,
    parquet_files,
    sample_frame,
)
from shared.ml.families import EXPLANATION_METHODS, FittedFamily, TrainingData, fit_family
from shared.ml.features import FittedEncoder, fit_encoder
from shared.ml.model import Calibration, Lineage, Manifest, write_artifact
from step_functions.pipeline import parse_hyperparameters, split_reserved

SPEC_IN_CHANNEL = "feature_spec.json"
LINEAGE_IN_CHANNEL = "lineage.json"


class TrainingError(RuntimeError):
    """A failure with a reason a person can act on."""


def log(message: str) -> None:
    print(f"[train] {message}", flush=True)


def read_channel(path: Path | None, name: str) -> pd.DataFrame:
    if path is None or not path.is_dir():
        raise TrainingError(f"channel {name!r} is missing")
    files = sorted(p for p in path.rglob("*") if p.suffix in (".parquet", ".csv") and p.is_file())
    if not files:
        raise TrainingError(f"channel {name!r} at {path} has no .parquet or .csv file")
    frames = [pd.read_parquet(f) if f.suffix == ".parquet" else pd.read_csv(f) for f in files]
    return pd.concat(frames, ignore_index=True)


def resolve_spec(environment: TrainingEnvironment, hyperparameters: dict[str, Any]) -> FeatureSpec:
    train = environment.channel("train")
    if train is not None and (train / SPEC_IN_CHANNEL).is_file():
        return FeatureSpec.from_file(train / SPEC_IN_CHANNEL)
    return load_spec(hyperparameters["feature_spec"])


def lineage_of(environment: TrainingEnvironment) -> dict[str, Any]:
    train = environment.channel("train")
    if train is not None and (train / LINEAGE_IN_CHANNEL).is_file():
        loaded: dict[str, Any] = json.loads((train / LINEAGE_IN_CHANNEL).read_text(encoding="utf-8"))
        return loaded
    digest = hashlib.sha256()
    for name in ("train", "validation"):
        channel = environment.channel(name)
        for f in sorted(channel.rglob("*")) if channel else []:
            if f.is_file():
                digest.update(f.read_bytes())
    return {"data_sha256": digest.hexdigest(), "source_files": []}


def target_of(frame: pd.DataFrame, spec: FeatureSpec, channel: str) -> np.ndarray:
    column = spec.target.column
    if column not in frame.columns:
        raise TrainingError(f"channel {channel!r} has no target column {column!r}")
    target = pd.to_numeric(frame[column], errors="coerce")
    if target.isna().any() or not target.isin([0, 1]).all():
        raise TrainingError(f"target {column!r} in channel {channel!r} must be 0/1 for every row")
    y = target.to_numpy(dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise TrainingError(f"channel {channel!r} needs both classes of {column!r}")
    return y


def run(environment: TrainingEnvironment) -> dict[str, Any]:
    started = time.perf_counter()
    hp = parse_hyperparameters(environment.hyperparameters)
    _, reserved = split_reserved(environment.hyperparameters)
    if reserved:
        log(f"SageMaker's own hyperparameters, not the model's: {json.dumps(reserved, sort_keys=True)}")
    spec = resolve_spec(environment, hp)
    # The lineage names the spec the model was trained on: the train channel's feature_spec.json
    # wins over the hyperparameter, whose default ("claims") would otherwise be recorded.
    hp["feature_spec"] = spec.name
    log(f"spec {spec.name!r}; hyperparameters {json.dumps(hp, sort_keys=True)}")
    train_files = parquet_files(environment.channel("train") or Path("/nonexistent"))
    if (
        hp["model_family"] == "xgboost"
        and hp["cv_folds"] < 2
        and hp["max_rows"] == 0
        and train_files
        and needs_external_memory(train_files, hp["xgb_memory_mb"])
    ):
        return run_external_memory(environment, spec, hp, train_files, started)
    train = read_channel(environment.channel("train"), "train")
    validation = read_channel(environment.channel("validation"), "validation")
    y_train = target_of(train, spec, "train")
    y_val = target_of(validation, spec, "validation")
    if 0 < hp["max_rows"] < len(train):  # a tuning trial's budget: a stratified sample
        from sklearn.model_selection import train_test_split

        kept, _ = train_test_split(
            np.arange(len(train)), train_size=hp["max_rows"], stratify=y_train, random_state=hp["seed"]
        )
        train, y_train = train.iloc[np.sort(kept)].reset_index(drop=True), y_train[np.sort(kept)]
        log(f"training on a stratified sample of {hp['max_rows']} rows")
    log(f"{len(train)} training rows, {len(validation)} validation rows")

    if hp["cv_folds"] >= 2:  # a tuning trial: its score is all SageMaker's tuner reads
        return cross_validated_trial(environment, spec, train, hp, started)

    encoder = fit_encoder(spec, train, y_train)
    x_train, x_val = encoder.transform(train), encoder.transform(validation)
    log(f"{x_train.shape[1]} encoded columns")

    family_name = hp["model_family"]
    family = fit_family(family_name, TrainingData(x_train, y_train, x_val, y_val, encoder.feature_names), hp)

    def train_scores_of(calibration: Calibration) -> np.ndarray:
        return calibration.apply(family.margin(x_train))

    return finish_training(
        environment,
        spec,
        hp,
        family,
        encoder,
        train,
        y_train,
        x_val,
        y_val,
        train_scores_of,
        len(train),
        started,
    )


def finish_training(
    environment: TrainingEnvironment,
    spec: FeatureSpec,
    hp: dict[str, Any],
    family: FittedFamily,
    encoder: FittedEncoder,
    train: pd.DataFrame,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    train_scores_of: Callable[[Calibration], np.ndarray],
    train_rows: int,
    started: float,
) -> dict[str, Any]:
    """Calibration, threshold, metrics and the artifact: the same for both ways of training.
    ``train`` (with ``y_train``) is every training row, or a sample of them when the rows were
    streamed; ``train_rows`` counts them all."""
    family_name = hp["model_family"]
    calibration = Calibration.fit(family.margin(x_val), y_val)
    log(
        f"{family_name} fitted; Platt calibration slope {calibration.slope:.3f}, "
        f"intercept {calibration.intercept:.3f}"
    )
    val_scores = calibration.apply(family.margin(x_val))
    costs = DecisionCosts(
        missed_high_risk=hp["cost_missed_high_risk"], needless_review=hp["cost_needless_review"]
    )
    threshold = choose_threshold(y_val, val_scores, costs)
    metrics: dict[str, Any] = {
        "validation": classification_metrics(y_val, val_scores, threshold, costs),
        "train": classification_metrics(y_train, train_scores_of(calibration), threshold, costs),
    }
    test_channel = environment.channel("test")
    if test_channel is not None and test_channel.is_dir() and any(test_channel.iterdir()):
        test = read_channel(test_channel, "test")
        y_test = target_of(test, spec, "test")
        test_scores = calibration.apply(family.margin(encoder.transform(test)))
        metrics["test"] = classification_metrics(y_test, test_scores, threshold, costs)

    lineage = lineage_of(environment)
    created = dt.datetime.now(dt.UTC)
    data_hash = str(lineage.get("data_sha256", ""))
    version = f"{created:%Y%m%d.%H%M%S}-{family_name}-{data_hash[:8]}"
    environment.model_dir.mkdir(parents=True, exist_ok=True)
    files = family.save(environment.model_dir)
    manifest = Manifest(
        model_version=version,
        family=family_name,
        created_at=created.isoformat(timespec="seconds"),
        threshold=threshold,
        costs=costs,
        metrics=metrics,
        lineage=Lineage(
            data_sha256=data_hash,
            code_version=os.environ.get("CODE_VERSION", "unknown"),
            hyperparameters=hp,
            train_rows=train_rows,
            validation_rows=len(y_val),
            source_files=list(lineage.get("source_files", [])),
        ),
        explanation_method=EXPLANATION_METHODS[family_name],
        calibration=calibration,
        files=files,
    )
    baseline = baseline_statistics(spec, train, len(train), val_scores)  # from a sample when streamed
    write_artifact(environment.model_dir, manifest, encoder, baseline)
    environment.output_data_dir.mkdir(parents=True, exist_ok=True)
    (environment.output_data_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")

    for channel in ("validation", "train"):
        for key in ("roc_auc", "pr_auc", "logloss", "brier", "f1", "recall", "precision"):
            if channel == "train" and key != "roc_auc":
                continue
            print(metric_line(f"{channel}:{key}", metrics[channel][key]), flush=True)
    log(
        f"model {version} written to {environment.model_dir} in {time.perf_counter() - started:.1f}s; "
        f"threshold {threshold:.3f}"
    )
    return {"model_version": version, "metrics": metrics}


EXTERNAL_SAMPLE_ROWS = 1_000_000  # rows the encoder, the baseline and the training metrics read
EXTERNAL_VALIDATION_ROWS = 1_000_000  # validation rows held for early stopping and calibration


def run_external_memory(
    environment: TrainingEnvironment,
    spec: FeatureSpec,
    hp: dict[str, Any],
    train_files: list[Path],
    started: float,
) -> dict[str, Any]:
    """XGBoost on training data that do not fit, through its external-memory iterator."""
    import tempfile

    from shared.ml.families import XGBoostFamily, class_weights

    target = spec.target.column
    total, positives = label_counts(train_files, target)
    log(f"{total:,} training rows do not fit the memory budget: XGBoost reads them batch by batch")
    sample = sample_frame(train_files, EXTERNAL_SAMPLE_ROWS, hp["seed"])
    y_sample = target_of(sample, spec, "train")
    encoder = fit_encoder(spec, sample, y_sample)
    validation_files = parquet_files(environment.channel("validation") or Path("/nonexistent"))
    if not validation_files:
        raise TrainingError("channel 'validation' has no .parquet file")
    validation = sample_frame(validation_files, EXTERNAL_VALIDATION_ROWS, hp["seed"])
    y_val = target_of(validation, spec, "validation")
    x_val = encoder.transform(validation)
    # 'balanced' weighs by the whole split's class counts, as the in-memory run does.
    ratio = (total - positives) / max(positives, 1)

    def weights(y: np.ndarray) -> np.ndarray:
        return class_weights(y, hp["class_weighting"], ratio)

    with tempfile.TemporaryDirectory(prefix="xgb-pages-") as cache:
        dtrain = external_matrix(
            train_files,
            encoder.transform,
            lambda frame: target_of(frame, spec, "train"),
            weights,
            Path(cache),
            encoder.feature_names,
        )
        import xgboost as xgb

        dval = xgb.DMatrix(x_val, label=y_val, missing=np.nan, feature_names=encoder.feature_names)
        family = XGBoostFamily.fit_matrices(dtrain, dval, hp)
    x_sample = encoder.transform(sample)
    return finish_training(
        environment,
        spec,
        hp,
        family,
        encoder,
        sample,
        y_sample,
        x_val,
        y_val,
        lambda calibration: calibration.apply(family.margin(x_sample)),
        total,
        started,
    )


def cross_validated_trial(
    environment: TrainingEnvironment,
    spec: FeatureSpec,
    train: pd.DataFrame,
    hp: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """The trial's objective as the local tuner computes it: mean PR-AUC over stratified folds of the
    training rows. The tuner needs no model from a trial (the train step refits the winner)."""
    from shared.ml.cross_validation import cross_validated_pr_auc, make_folds

    folds = make_folds(train.reset_index(drop=True), spec, hp["cv_folds"], hp["seed"])
    scores = cross_validated_pr_auc(folds, hp)
    mean = float(np.mean(scores))
    environment.model_dir.mkdir(parents=True, exist_ok=True)
    trial = {"cv_pr_auc": mean, "fold_pr_auc": scores, "hyperparameters": hp}
    (environment.model_dir / "trial.json").write_text(json.dumps(trial, indent=2), encoding="utf-8")
    log(
        f"{hp['cv_folds']}-fold PR-AUC {mean:.4f} (folds {', '.join(f'{s:.4f}' for s in scores)}) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    print(metric_line("validation:pr_auc", mean), flush=True)
    return {"cv_pr_auc": mean, "fold_pr_auc": scores}


def main() -> int:
    environment = training_environment()
    try:
        run(environment)
    except Exception as error:  # the reason must reach SageMaker's FailureReason
        reason = str(error) if isinstance(error, TrainingError | ValueError) else repr(error)
        environment.output_dir.mkdir(parents=True, exist_ok=True)
        environment.failure_file.write_text(reason[:1000], encoding="utf-8")
        traceback.print_exc()
        print(f"[train] FAILED: {reason}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
