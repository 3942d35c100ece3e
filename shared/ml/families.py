"""The model families: XGBoost, Random Forest (scikit-learn) and a TensorFlow/Keras network.

Each family fits on the encoded matrix, gives raw log-odds (the *margin*, before calibration),
per-column contributions to that margin, and saves itself into the model folder without pickles
of our own (XGBoost's UBJ, skops for scikit-learn, Keras' ``.keras`` format).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

import numpy as np

from shared.ml.forest_paths import ForestPaths
from shared.ml.row_parallel import PARALLEL_ROWS
from shared.ml.treeshap import LeafTables, tables_from_booster

FAMILIES: Final = ("xgboost", "random_forest", "keras")
EXPLANATION_METHODS: Final = {
    "xgboost": "exact path-dependent TreeSHAP (per-leaf tables; the values of XGBoost's pred_contribs)",
    "random_forest": (
        "Saabas path attributions averaged over the forest (exact sums, not Shapley values), "
        "rescaled to log-odds"
    ),
    "keras": "occlusion: each column set to its training mean, one batched forward pass per column",
}
_EPS: Final = 1e-6


class FittedFamily(Protocol):
    name: str

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        """Raw log-odds per row."""
        ...

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per-row, per-column contributions to the margin."""
        ...

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Margin and contributions together, sharing whatever work they have in common."""
        ...

    def save(self, model_dir: Path) -> dict[str, str]:
        """Write the model's files; returns their names by role."""
        ...


def class_weights(y: np.ndarray, weighting: str, negatives_per_positive: float | None = None) -> np.ndarray:
    """Per-row weights: 'balanced' gives both classes the same total weight (over ``y``, or over the
    whole split when its ratio of negatives to positives is given, for rows seen a batch at a time)."""
    if weighting == "none":
        return np.ones(len(y))
    if negatives_per_positive is None:
        positives = max(float(np.sum(y)), 1.0)
        negatives_per_positive = (len(y) - positives) / positives
    return np.where(y == 1, negatives_per_positive, 1.0)


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)))


# ---------------------------------------------------------------------------------------------
# XGBoost


@dataclass
class XGBoostFamily:
    """Two handles on one model: all cores for batches, one thread for a few claims. A single claim
    is one row, and waking XGBoost's idle helper threads for it burns a core the server needs."""

    booster: Any
    name: str = "xgboost"
    single_thread: Any = None
    tables: LeafTables | None = None  # None: the model is too large to tabulate, XGBoost explains
    MODEL_FILE: ClassVar[str] = "model.ubj"

    def __post_init__(self) -> None:
        if self.single_thread is None:
            self.single_thread = self.booster

    def _for(self, rows: int) -> Any:
        return self.booster if rows >= PARALLEL_ROWS else self.single_thread

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        booster = self._for(len(matrix))
        return np.asarray(
            booster.inplace_predict(matrix, predict_type="margin", validate_features=False),
            dtype=np.float64,
        )

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.tables is not None:
            return self.tables.explain(matrix)
        return self.margin(matrix), self.native_contributions(matrix)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Exact path-dependent TreeSHAP from the per-leaf tables (``shared/ml/treeshap.py``): about
        30 µs a claim on one core for 155 depth-4 trees, where XGBoost's recursion takes 80 µs."""
        if self.tables is not None:
            return self.tables.explain(matrix)[1]
        return self.native_contributions(matrix)

    def native_contributions(self, matrix: np.ndarray) -> np.ndarray:
        """XGBoost's own TreeSHAP, for models too large to tabulate: O(leaves x depth²) a tree and a
        row; a batch's rows are spread over every core."""
        import xgboost as xgb

        parallel = len(matrix) >= PARALLEL_ROWS
        threads = (os.cpu_count() or 1) if parallel else 1
        dmatrix = xgb.DMatrix(matrix, missing=np.nan, nthread=threads)
        contribs = self._for(len(matrix)).predict(dmatrix, pred_contribs=True, validate_features=False)
        return np.asarray(contribs[:, :-1], dtype=np.float64)

    def save(self, model_dir: Path) -> dict[str, str]:
        self.booster.save_model(str(model_dir / self.MODEL_FILE))
        return {"model": self.MODEL_FILE}

    @classmethod
    def load(cls, model_dir: Path, files: dict[str, str]) -> XGBoostFamily:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(model_dir / files["model"]))
        booster.set_param({"nthread": os.cpu_count() or 1})
        single_thread = booster.copy()
        single_thread.set_param({"nthread": 1})
        return cls(booster, single_thread=single_thread, tables=tables_from_booster(booster))

    @classmethod
    def fit(cls, data: TrainingData, hp: dict[str, Any]) -> XGBoostFamily:
        import xgboost as xgb

        weights = class_weights(data.y_train, hp["class_weighting"])
        dtrain = xgb.DMatrix(
            data.x_train, label=data.y_train, weight=weights, missing=np.nan, feature_names=data.feature_names
        )
        dval = xgb.DMatrix(data.x_val, label=data.y_val, missing=np.nan, feature_names=data.feature_names)
        return cls.fit_matrices(dtrain, dval, hp)

    @classmethod
    def fit_matrices(cls, dtrain: Any, dval: Any, hp: dict[str, Any]) -> XGBoostFamily:
        """Boosting with early stopping on the validation matrix; ``dtrain`` may be an in-memory
        DMatrix or an external-memory one (:mod:`shared.ml.external_memory`)."""
        import os

        import xgboost as xgb

        params = {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "aucpr"],
            "tree_method": "hist",
            "max_depth": hp["xgb_max_depth"],
            "eta": hp["xgb_eta"],
            "min_child_weight": hp["xgb_min_child_weight"],
            "subsample": hp["xgb_subsample"],
            "colsample_bytree": hp["xgb_colsample_bytree"],
            "lambda": hp["xgb_lambda"],
            # A model trained before xgb_gamma existed had XGBoost's 0: its lineage refits the same.
            "gamma": hp.get("xgb_gamma", 0.0),
            "seed": hp["seed"],
            "nthread": os.cpu_count() or 1,
        }
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=hp["xgb_num_round"],
            evals=[(dval, "validation")],
            early_stopping_rounds=hp["early_stopping_rounds"],
            verbose_eval=False,
        )
        # Keep only the trees up to the best round, so serving and explanations use the chosen model.
        return cls(booster[: booster.best_iteration + 1])


# ---------------------------------------------------------------------------------------------
# Random Forest


@dataclass
class RandomForestFamily:
    forest: Any
    name: str = "random_forest"
    paths: ForestPaths | None = field(default=None, repr=False)  # the forest as flat, compiled arrays
    MODEL_FILE: ClassVar[str] = "model.skops"

    def __post_init__(self) -> None:
        if self.paths is None:
            self.paths = ForestPaths.from_forest(self.forest)

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        return _logit(self.forest.predict_proba(matrix)[:, 1])

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Path attributions (``shared/ml/forest_paths.py``) in P(high risk), rescaled so that they
        add up to the margin's distance from the margin of the forest's average."""
        assert self.paths is not None
        p, credits = self.paths.explain(matrix)
        gap = p - self.paths.average
        scale = np.where(
            np.abs(gap) > 1e-9,
            (_logit(p) - _logit(np.array([self.paths.average]))) / np.where(gap == 0, 1, gap),
            1.0 / np.maximum(p * (1 - p), _EPS),  # the slope of the logit where the gap vanishes
        )
        return _logit(p), np.asarray(credits * scale[:, None])

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        return self.explain(matrix)[1]

    def save(self, model_dir: Path) -> dict[str, str]:
        import skops.io as sio

        sio.dump(self.forest, model_dir / self.MODEL_FILE)
        return {"model": self.MODEL_FILE}

    @classmethod
    def load(cls, model_dir: Path, files: dict[str, str]) -> RandomForestFamily:
        import skops.io as sio

        path = model_dir / files["model"]
        # Only scikit-learn's own tree and forest types may be rebuilt from the file.
        trusted = [t for t in sio.get_untrusted_types(file=path) if t.startswith(("sklearn.", "numpy."))]
        forest = sio.load(path, trusted=trusted)
        forest.set_params(n_jobs=1)
        return cls(forest)

    @classmethod
    def fit(cls, data: TrainingData, hp: dict[str, Any]) -> RandomForestFamily:
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(
            n_estimators=hp["rf_n_estimators"],
            max_depth=hp["rf_max_depth"],
            min_samples_leaf=hp["rf_min_samples_leaf"],
            max_features=hp["rf_max_features"],
            n_jobs=-1,
            random_state=hp["seed"],
        )
        forest.fit(
            data.x_train, data.y_train, sample_weight=class_weights(data.y_train, hp["class_weighting"])
        )
        return cls(forest)


# ---------------------------------------------------------------------------------------------
# TensorFlow / Keras


@dataclass
class KerasFamily:
    network: Any
    fill: np.ndarray  # per-column training means: stand-ins for missing values and occlusion baselines
    indicator_columns: list[int]  # columns that get a "was missing" input
    name: str = "keras"
    MODEL_FILE: ClassVar[str] = "model.keras"
    PREP_FILE: ClassVar[str] = "keras_inputs.json"

    def _inputs(self, matrix: np.ndarray) -> np.ndarray:
        missing = np.isnan(matrix)
        filled = np.where(missing, self.fill, matrix)
        return np.hstack([filled, missing[:, self.indicator_columns]]).astype(np.float32)

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        out = self.network(self._inputs(matrix), training=False)
        return np.asarray(out, dtype=np.float64).reshape(-1)

    def explain(self, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, d = matrix.shape
        # One batched pass: the claims as they are, then each column replaced by its training mean.
        variants = np.repeat(matrix[None, :, :], d + 1, axis=0)
        for j in range(d):
            variants[j + 1, :, j] = self.fill[j]
        margins = self.margin(variants.reshape(-1, d)).reshape(d + 1, n)
        return margins[0], np.asarray((margins[0][None, :] - margins[1:]).T)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        return self.explain(matrix)[1]

    def save(self, model_dir: Path) -> dict[str, str]:
        self.network.save(model_dir / self.MODEL_FILE)
        prep = {"fill": self.fill.tolist(), "indicator_columns": self.indicator_columns}
        (model_dir / self.PREP_FILE).write_text(json.dumps(prep), encoding="utf-8")
        return {"model": self.MODEL_FILE, "inputs": self.PREP_FILE}

    @classmethod
    def load(cls, model_dir: Path, files: dict[str, str]) -> KerasFamily:
        import keras

        network = keras.saving.load_model(model_dir / files["model"], compile=False)  # safe_mode stays on
        prep = json.loads((model_dir / files["inputs"]).read_text(encoding="utf-8"))
        return cls(network, np.asarray(prep["fill"]), list(prep["indicator_columns"]))

    @classmethod
    def fit(cls, data: TrainingData, hp: dict[str, Any]) -> KerasFamily:
        import keras

        keras.utils.set_random_seed(hp["seed"])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-missing columns have no mean
            fill = np.nan_to_num(np.nanmean(data.x_train, axis=0))
        indicator_columns = [int(j) for j in np.flatnonzero(np.isnan(data.x_train).any(axis=0))]
        shell = cls(None, fill, indicator_columns)
        x_train, x_val = shell._inputs(data.x_train), shell._inputs(data.x_val)

        normalizer = keras.layers.Normalization()
        normalizer.adapt(x_train)
        layers: list[Any] = [keras.Input(shape=(x_train.shape[1],)), normalizer]
        for _ in range(hp["nn_layers"]):
            layers += [
                keras.layers.Dense(hp["nn_units"], activation="relu"),
                keras.layers.Dropout(hp["nn_dropout"]),
            ]
        layers.append(keras.layers.Dense(1))  # logits: the margin itself
        network = keras.Sequential(layers)
        network.compile(
            optimizer=keras.optimizers.Adam(hp["nn_learning_rate"]),
            loss=keras.losses.BinaryCrossentropy(from_logits=True),
        )
        network.fit(
            x_train,
            data.y_train.astype(np.float32),
            sample_weight=class_weights(data.y_train, hp["class_weighting"]).astype(np.float32),
            validation_data=(x_val, data.y_val.astype(np.float32)),
            epochs=hp["nn_epochs"],
            batch_size=hp["nn_batch_size"],
            verbose=0,
            callbacks=[
                keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=hp["nn_patience"], restore_best_weights=True
                )
            ],
        )
        shell.network = network
        return shell


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    feature_names: list[str]


_CLASSES: Final[dict[str, Any]] = {
    "xgboost": XGBoostFamily,
    "random_forest": RandomForestFamily,
    "keras": KerasFamily,
}


def fit_family(family: str, data: TrainingData, hp: dict[str, Any]) -> FittedFamily:
    if family not in _CLASSES:
        raise ValueError(f"unknown model family {family!r}: use one of {list(FAMILIES)}")
    fitted: FittedFamily = _CLASSES[family].fit(data, hp)
    return fitted


def load_family(family: str, model_dir: Path, files: dict[str, str]) -> FittedFamily:
    if family not in _CLASSES:
        raise ValueError(f"unknown model family {family!r}")
    loaded: FittedFamily = _CLASSES[family].load(model_dir, files)
    return loaded
