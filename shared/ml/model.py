"""The model artifact and the risk model that serves from it.

``model.tar.gz`` holds one folder, whatever the model family::

    manifest.json             version, family, threshold, costs, metrics, lineage, file names
    feature_spec.json         the spec the model was trained with
    encoder.json              the fitted encoder (levels, tokens, column order)
    baseline_statistics.json  per-feature statistics of the training data, for drift monitoring
    model.*                   the fitted model in its family's own format (model.ubj for XGBoost,
                              model.skops for scikit-learn, model.keras plus keras_inputs.json)

Nothing is pickled, so loading an artifact never runs code from it.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from pydantic import BaseModel, Field

from shared.decision import DecisionCosts, confidence, risk_level
from shared.feature_spec import FeatureSpec
from shared.ml.factor_text import TOP_FACTORS, FactorLayout
from shared.ml.families import FittedFamily, load_family
from shared.ml.features import Columns, FittedEncoder, columns_from_records, input_columns
from shared.ml.one_claim import OneClaimEncoder

ARTIFACT_FORMAT: Final = 1
MANIFEST: Final = "manifest.json"
SPEC_FILE: Final = "feature_spec.json"
ENCODER_FILE: Final = "encoder.json"
BASELINE_FILE: Final = "baseline_statistics.json"


class Lineage(BaseModel):
    data_sha256: str
    code_version: str
    hyperparameters: dict[str, Any]
    train_rows: int
    validation_rows: int
    source_files: list[str] = Field(default_factory=list)


class Calibration(BaseModel):
    """Platt scaling fitted on the validation set: P(high risk) = sigmoid(slope * margin + intercept)."""

    method: str = "platt"
    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, margin: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept))))

    @classmethod
    def fit(cls, margin: np.ndarray, y: np.ndarray) -> Calibration:
        """Platt scaling on held-out margins: two numbers, so it barely overfits."""
        from sklearn.linear_model import LogisticRegression

        platt = LogisticRegression(C=1e6, max_iter=1000).fit(margin.reshape(-1, 1), y)
        return cls(slope=float(platt.coef_[0, 0]), intercept=float(platt.intercept_[0]))


class Manifest(BaseModel):
    format: int = ARTIFACT_FORMAT
    model_version: str
    family: str
    created_at: str
    threshold: float
    costs: DecisionCosts
    metrics: dict[str, Any]
    lineage: Lineage
    explanation_method: str
    calibration: Calibration = Field(default_factory=Calibration)
    files: dict[str, str]


@dataclass
class RiskModel:
    """A loaded artifact: encodes claims, scores them and explains each score."""

    manifest: Manifest
    encoder: FittedEncoder
    family: FittedFamily
    baseline: dict[str, Any]

    def __post_init__(self) -> None:
        self._factor_names = self.encoder.factor_names
        self._factor_names_array = np.array(self._factor_names, dtype=object)
        self._factor_matrix = np.zeros((len(self.encoder.columns), len(self._factor_names)))
        self._factor_matrix[np.arange(len(self.encoder.columns)), self.encoder.factor_index()] = 1.0
        self._inputs = input_columns(self.encoder)
        # Encoded columns of one factor sit side by side, so a factor's contribution is a sum over a
        # run of columns: np.add.reduceat, without a matrix product (which would start BLAS threads).
        index = self.encoder.factor_index()
        self._factor_starts = np.flatnonzero(np.r_[True, np.diff(index) != 0])
        self._contiguous = bool(np.all(np.diff(index) >= 0)) and len(self._factor_starts) == len(
            self._factor_names
        )
        # Where each factor's value for a claim is read: its one encoded column, or, for a one-hot
        # categorical, the raw field (the level the claim has).
        categorical = set(self.encoder.level_fields)  # categories, bands, month and weekday names
        self._value_column = np.full(len(self._factor_names), -1, dtype=np.int64)
        self._value_field: list[str | None] = [None] * len(self._factor_names)
        for j, column in enumerate(self.encoder.columns):
            k = self._factor_names.index(column.factor)
            if column.factor in categorical:
                self._value_field[k] = column.factor
            else:
                self._value_column[k] = j
        self._is_text = np.array([":" in c.name for c in self.encoder.columns])
        self.factor_layout = FactorLayout(
            self._factor_names, self._value_column, self._value_field, self._is_text
        )
        self._one_claim = OneClaimEncoder(self.encoder)

    @property
    def spec(self) -> FeatureSpec:
        return self.encoder.spec

    @property
    def version(self) -> str:
        return self.manifest.model_version

    @classmethod
    def load(cls, model_dir: str | Path) -> RiskModel:
        root = Path(model_dir)
        manifest = Manifest.model_validate_json((root / MANIFEST).read_text(encoding="utf-8"))
        encoder = FittedEncoder.model_validate_json((root / ENCODER_FILE).read_text(encoding="utf-8"))
        baseline = json.loads((root / BASELINE_FILE).read_text(encoding="utf-8"))
        return cls(manifest, encoder, load_family(manifest.family, root, manifest.files), baseline)

    def probabilities(self, matrix: np.ndarray) -> np.ndarray:
        return self.manifest.calibration.apply(self.family.margin(matrix))

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Contributions to the calibrated log-odds, summed per readable factor."""
        return self._factor_sums(self.family.contributions(matrix))

    def _factor_sums(self, column_contributions: np.ndarray) -> np.ndarray:
        raw = column_contributions * self.manifest.calibration.slope
        if self._contiguous and raw.shape[1]:
            return np.add.reduceat(raw, self._factor_starts, axis=1)
        return np.asarray(raw @ self._factor_matrix)

    def scores(self, data: Columns, n_rows: int | None = None) -> np.ndarray:
        return self.probabilities(self.encoder.transform(data, n_rows))

    def predict_records(
        self, records: Sequence[Mapping[str, Any]], explain: bool = True
    ) -> list[dict[str, Any]]:
        if explain and len(records) == 1 and (answer := self._predict_one(records[0])) is not None:
            return [answer]
        data = columns_from_records(records, self._inputs)
        matrix = self.encoder.transform(data, len(records))
        if explain:
            margin, column_contributions = self.family.explain(matrix)
            scores = self.manifest.calibration.apply(margin)
            factors = self._top_factors(matrix, self._factor_sums(column_contributions), records)
        else:
            scores, factors = self.probabilities(matrix), None
        id_column = self.spec.id_column
        threshold = self.manifest.threshold
        return [
            {
                "claim_id": str(record.get(id_column, "")),
                "risk_level": risk_level(float(score), threshold).value,
                "risk_score": round(float(score), 6),
                "confidence": round(confidence(float(score), threshold), 6),
                "risk_factors": factors[i] if factors is not None else [],
                "model_version": self.version,
                "threshold": threshold,
            }
            for i, (record, score) in enumerate(zip(records, scores, strict=True))
        ]

    def _predict_one(self, record: Mapping[str, Any]) -> dict[str, Any] | None:
        """:meth:`predict_records` of one claim with its factors, the answer the batch code gives to
        the bit, without the batch code's per-call costs (about 0.1 ms of a served claim's 0.3);
        None when the claim needs the batch code (see :class:`OneClaimEncoder`)."""
        matrix = self._one_claim.encode(record)
        if matrix is None:
            return None
        margin, column_contributions = self.family.explain(matrix)
        contributions = self._factor_sums(column_contributions)
        if np.isnan(contributions).any():  # numpy's ranking places NaN; the batch code keeps that
            return None
        score = float(self.manifest.calibration.apply(margin)[0])
        threshold = self.manifest.threshold
        return {
            "claim_id": str(record.get(self.spec.id_column, "")),
            "risk_level": risk_level(score, threshold).value,
            "risk_score": round(score, 6),
            "confidence": round(confidence(score, threshold), 6),
            "risk_factors": self._top_factors_one(matrix, contributions, record),
            "model_version": self.version,
            "threshold": threshold,
        }

    def _top_factors_one(
        self, matrix: np.ndarray, contributions: np.ndarray, record: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """:meth:`_top_factors` of a single row (``matrix`` and ``contributions`` of shape (1, n)):
        ranked in Python, and numpy called only where its arithmetic decides a bit (the sum's
        order, rounding in float64 and, for the claim's values, in float32)."""
        magnitude = np.abs(contributions)
        total = float(magnitude.sum(axis=1)[0])
        sizes = magnitude[0].tolist()
        signed = contributions[0].tolist()
        # Largest first, the lower column first among equals: argsort(-magnitude, kind="stable").
        top = sorted(range(len(sizes)), key=sizes.__getitem__, reverse=True)[:TOP_FACTORS]
        denominator = total if total > 0 else 1.0
        rounded = np.round(np.array([sizes[k] / denominator for k in top] + [signed[k] for k in top]), 4)
        shares, signed_values = rounded[: len(top)].tolist(), rounded[len(top) :].tolist()
        columns = [max(int(self._value_column[k]), 0) for k in top]
        raw = matrix[0, columns]
        numbers = np.round(raw, 4).tolist()  # float32, as the matrix holds the claim's values
        row = []
        for rank, k in enumerate(top):
            contribution = signed[k]
            if contribution == 0:
                continue
            field = self._value_field[k]
            value: Any
            if field is not None:  # a category: the level the claim has, as given
                level = record.get(field)
                value = None if level is None or level == "" else str(level)
            elif np.isnan(raw[rank]):
                value = None
            elif self._is_text[columns[rank]]:
                value = bool(raw[rank] != 0)  # a word of the description: present or not
            else:
                value = numbers[rank]
            row.append(
                {
                    "factor": self._factor_names[k],
                    "importance": shares[rank],
                    "direction": "increases_risk" if contribution > 0 else "decreases_risk",
                    "contribution": signed_values[rank],
                    "value": value,
                }
            )
        return row

    def _top_factors(
        self, matrix: np.ndarray, contributions: np.ndarray, records: Sequence[Mapping[str, Any]]
    ) -> list[list[dict[str, Any]]]:
        """The largest contributions per claim (all rows at once), each with the claim's own value:
        a number, a category, true/false for a word in the description, or null when not provided
        (then the contribution is the model's reading of the absence)."""
        magnitude = np.abs(contributions)
        totals = magnitude.sum(axis=1)
        top = np.argsort(-magnitude, axis=1, kind="stable")[:, :TOP_FACTORS]
        shares = np.take_along_axis(magnitude, top, axis=1) / np.where(totals > 0, totals, 1.0)[:, None]
        signed = np.take_along_axis(contributions, top, axis=1)
        columns = self._value_column[top]
        raw = np.take_along_axis(matrix, np.maximum(columns, 0), axis=1)
        # Rounding and conversion to Python values for all rows at once; the loop below only picks.
        names = self._factor_names_array[top].tolist()
        share_values = np.round(shares, 4).tolist()
        signed_values = np.round(signed, 4).tolist()
        increases = (signed > 0).tolist()
        kept = (signed != 0).tolist()
        text = self._is_text[np.maximum(columns, 0)]
        numbers = np.round(raw, 4).astype(object)
        numbers[np.isnan(raw)] = None
        word = text & ~np.isnan(raw)
        numbers[word] = (raw[word] != 0).tolist()  # a word of the description: present or not
        own_values = numbers.tolist()
        fields = [[self._value_field[k] for k in row] for row in top.tolist()]
        out: list[list[dict[str, Any]]] = []
        for i, record in enumerate(records):
            row = []
            for rank in range(top.shape[1]):
                if not kept[i][rank]:
                    continue
                field = fields[i][rank]
                if field is None:
                    value = own_values[i][rank]
                else:  # a category: the level the claim has, as given
                    level = record.get(field)
                    value = None if level is None or level == "" else str(level)
                row.append(
                    {
                        "factor": names[i][rank],
                        "importance": share_values[i][rank],
                        "direction": "increases_risk" if increases[i][rank] else "decreases_risk",
                        "contribution": signed_values[i][rank],
                        "value": value,
                    }
                )
            out.append(row)
        return out


def write_artifact(
    model_dir: str | Path,
    manifest: Manifest,
    encoder: FittedEncoder,
    baseline: dict[str, Any],
) -> None:
    """Write all but the model's own files, which the family writes (the manifest names them)."""
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / ENCODER_FILE).write_text(encoder.model_dump_json(), encoding="utf-8")
    (root / SPEC_FILE).write_text(encoder.spec.to_json(), encoding="utf-8")
    (root / BASELINE_FILE).write_text(json.dumps(baseline, indent=1), encoding="utf-8")
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")


def pack_model_dir(model_dir: str | Path, tarball: str | Path) -> Path:
    """Pack a model folder the way SageMaker does: the folder's contents at the archive's root."""
    target = Path(tarball)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as archive:
        for path in sorted(Path(model_dir).iterdir()):
            archive.add(path, arcname=path.name)
    return target


def unpack_model(tarball: str | Path, into: str | Path) -> Path:
    destination = Path(into)
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as archive:
        archive.extractall(destination, filter="data")
    return destination
