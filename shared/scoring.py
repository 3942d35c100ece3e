"""Scoring claims through the model endpoint port: the API's domain logic."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence

from shared.ports import EndpointError, ModelEndpoint
from shared.schema import Claim, EndpointPrediction, PredictionResponse


def score_claims(endpoint: ModelEndpoint, claims: Sequence[Claim]) -> list[PredictionResponse]:
    """Score validated claims; every answer is checked against the response contract."""
    started = time.perf_counter()
    payload = [claim.model_dump(mode="json", exclude_none=True) for claim in claims]
    raw = endpoint.invoke(payload)
    predictions = [EndpointPrediction.model_validate(p) for p in raw]
    for claim, prediction in zip(claims, predictions, strict=True):
        if prediction.claim_id != claim.claim_id:
            raise EndpointError(f"endpoint answered for {prediction.claim_id!r}, asked {claim.claim_id!r}")
    elapsed_ms = round((time.perf_counter() - started) * 1000.0, 3)
    now = dt.datetime.now(dt.UTC)
    return [
        PredictionResponse(**p.model_dump(), processing_time_ms=elapsed_ms, timestamp=now)
        for p in predictions
    ]
