"""Claims for tests, derived from the schema's documented example so there is one definition."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.schema import EXAMPLE_CLAIM, Claim

if TYPE_CHECKING:
    from datetime import datetime

    from local.pipeline_runner import PipelineServices
    from shared.capture import CaptureWriter


def minimal_claim(**changes: Any) -> dict[str, Any]:
    """The example claim cut down to the required fields (the product brief's); ``field=None`` drops one."""
    claim = {name: EXAMPLE_CLAIM[name] for name, field in Claim.model_fields.items() if field.is_required()}
    claim.update(changes)
    return {k: v for k, v in claim.items() if v is not None}


def local_test_services(root: Path) -> PipelineServices:
    """The local adapters (MLflow registry on sqlite, model store, notification log) inside ``root``."""
    from local.pipeline_runner import local_services

    root.mkdir(parents=True, exist_ok=True)
    return local_services(root, tracking_uri_in(root))


def tracking_uri_in(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def capture_scored_claim(
    writer: CaptureWriter, claim_id: str, level: str, when: datetime, score: float = 0.5
) -> None:
    """One claim scored by the endpoint, as its data capture records the exchange."""
    import json

    prediction = {
        "claim_id": claim_id,
        "risk_level": level,
        "risk_score": score,
        "confidence": 0.5,
        "model_version": "m1",
    }
    writer.submit(
        "claims-risk",
        json.dumps({"instances": [minimal_claim(claim_id=claim_id)]}).encode(),
        "application/json",
        json.dumps({"predictions": [prediction]}).encode(),
        "application/json",
        when=when,
    )
