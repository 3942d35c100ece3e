"""Baseline statistics of the training data, stored in the model artifact for drift monitoring.

Numeric features keep decile bin edges and the share of rows in each bin (for PSI and KS), plus
summary moments; categorical features keep level frequencies. The score distribution on the
validation set is kept too, so a shift in predictions can be measured against it.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from shared.feature_spec import ColumnKind, ColumnRole, FeatureSpec
from shared.ml.features import Columns, canonical_levels, derive, to_bool_float, to_float, to_str

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


_SPELLED_KINDS: Final = (ColumnKind.ORDINAL, ColumnKind.MONTH, ColumnKind.WEEKDAY)


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
        elif col.kind in _SPELLED_KINDS:  # bands, month or weekday names: their shares, as categories
            stats = categorical_statistics(canonical_levels(col, data.get(col.name), n))
        else:
            continue
        features[col.name] = stats | {"role": col.role.value}
    # Assembled dates are left out: a date moves with time, so it would always seem to drift.
    assembled = {d.name: d for d in spec.assembled_dates}
    for derived in spec.model_derived:
        values = derive(derived, data, n, assembled=assembled)
        features[derived.name] = numeric_statistics(values) | {"role": "derived"}
    return {
        "rows": n,
        "features": features,
        "prediction": numeric_statistics(np.asarray(validation_scores, dtype=np.float64)),
    }
