"""Baseline statistics of the training data, stored in the model artifact for drift monitoring.

Numeric features keep decile bin edges and the share of rows in each bin (for PSI and KS), plus
summary moments; categorical features keep level frequencies. The score distribution on the
validation set is kept too, so a shift in predictions can be measured against it.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from shared.feature_spec import ColumnKind, ColumnRole, FeatureSpec
from shared.ml.features import Columns, derive, to_bool_float, to_float, to_str

BINS: Final = 10


def numeric_statistics(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    stats: dict[str, Any] = {
        "kind": "numeric",
        "count": len(values),
        "missing_rate": 1 - len(present) / max(len(values), 1),
    }
    if len(present) == 0:
        return stats
    edges = np.unique(np.quantile(present, np.linspace(0, 1, BINS + 1)))
    counts, _ = np.histogram(present, bins=edges) if len(edges) > 1 else (np.array([len(present)]), edges)
    stats.update(
        mean=float(present.mean()),
        std=float(present.std()),
        min=float(present.min()),
        max=float(present.max()),
        bin_edges=[float(e) for e in edges],
        bin_shares=[float(c / len(present)) for c in counts],
    )
    return stats


def categorical_statistics(values: np.ndarray, limit: int = 50) -> dict[str, Any]:
    present = np.array([v for v in values if v is not None], dtype=object)
    levels, counts = np.unique(present.astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    return {
        "kind": "categorical",
        "count": len(values),
        "missing_rate": 1 - len(present) / max(len(values), 1),
        "frequencies": {str(levels[i]): float(counts[i] / len(present)) for i in order},
    }


def baseline_statistics(
    spec: FeatureSpec, data: Columns, n: int, validation_scores: np.ndarray
) -> dict[str, Any]:
    features: dict[str, dict[str, Any]] = {}
    for col in spec.columns:
        if col.role not in (ColumnRole.FEATURE, ColumnRole.PROTECTED):
            continue
        if col.kind in (ColumnKind.NUMERIC, ColumnKind.INTEGER):
            stats = numeric_statistics(to_float(data.get(col.name), n, col.name))
        elif col.kind == ColumnKind.BOOLEAN:
            stats = numeric_statistics(to_bool_float(data.get(col.name), n, col.name))
        elif col.kind == ColumnKind.CATEGORICAL:
            stats = categorical_statistics(to_str(data.get(col.name), n))
        else:
            continue
        features[col.name] = stats | {"role": col.role.value}
    for derived in spec.derived:
        features[derived.name] = numeric_statistics(derive(derived, data, n)) | {"role": "derived"}
    return {
        "rows": n,
        "features": features,
        "prediction": numeric_statistics(np.asarray(validation_scores, dtype=np.float64)),
    }
