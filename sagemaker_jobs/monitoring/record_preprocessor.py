"""Model Monitor's record preprocessor for the claims endpoint: one flat record per scored claim.

The endpoint receives ``{"instances": [claim, ...]}``, which Model Monitor's built-in analyzer
cannot read: it wants flat records. This script (uploaded on its own, so standard library only)
turns each captured request into its claims, keeping the fields the baseline knows: the
``baseline_constraints`` file Model Monitor hands the job names them. Without it, every field but
the free text is kept. The validate step writes the baseline data with :func:`monitored_record`
too, so baseline and captured records have the same columns.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Free text is personal and not a distribution to monitor; the drift job handles its own features.
UNMONITORED_FIELDS = frozenset({"description", "claim_id"})


def _baseline_fields() -> frozenset[str] | None:
    location = os.environ.get("baseline_constraints", "")  # noqa: SIM112 (Model Monitor's own name)
    if not location or not Path(location).is_file():
        return None
    constraints = json.loads(Path(location).read_text(encoding="utf-8"))
    return frozenset(feature["name"] for feature in constraints.get("features", []))


BASELINE_FIELDS = _baseline_fields()


def monitored_record(claim: Mapping[str, Any], fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The claim's monitored fields, flat; nested values become JSON text."""
    keep = frozenset(fields) if fields is not None else None
    record = {}
    for name, value in claim.items():
        if name in UNMONITORED_FIELDS or (keep is not None and name not in keep):
            continue
        record[name] = json.dumps(value) if isinstance(value, (dict, list)) else value
    return record


def preprocess_handler(inference_record: Any) -> list[dict[str, Any]]:
    """Model Monitor's entry point: a captured request in, its claims out as flat records."""
    payload = json.loads(inference_record.endpoint_input.data)
    claims = payload.get("instances", [payload]) if isinstance(payload, dict) else payload
    return [monitored_record(claim, BASELINE_FIELDS) for claim in claims if isinstance(claim, dict)]
