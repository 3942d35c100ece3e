"""Inference script for the SageMaker framework containers (and the local model server).

SageMaker calls ``model_fn`` once when the container starts, then ``input_fn`` → ``predict_fn`` →
``output_fn`` for every request or batch-transform mini-batch.

**Batch transform.** The batch trigger starts every transform job with ``CLAIMS_RISK_REJECTED_S3_URI``
in its environment; a real-time endpoint never has it. In a transform job, a CSV or JSON Lines body
(one mini-batch of lines, ``SplitType=Line``) and a Parquet body (a whole file) are scored row by row
with :func:`shared.ml.batch_scoring.score_lines`, the code that scores files locally: each line gives
exactly one output line, its prediction or an error naming why it was rejected, so one bad row
never fails its mini-batch and nothing is lost. The rejected rows also go, with their reasons, to
a JSON Lines part under that rejected prefix (``rejected/<file>/``). Real-time requests keep the
all-or-nothing behaviour (a bad body is one 4xx).

Only a CSV's first mini-batch carries its header line, so the trigger passes the file's column order
in ``CLAIMS_RISK_CSV_COLUMNS``: every mini-batch is read in that order and the header line skipped
where it appears (without the variable, header-less lines are in the spec's order).
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

from shared.batch_jobs import REJECTED_URI_ENV, declared_csv_columns
from shared.feature_spec import ColumnRole
from shared.ml.model import RiskModel
from shared.ml.request_validation import validated_records
from shared.payloads import CSV, JSON_LINES, media_type, parse_records, render_predictions

# Batch transform sends CSV lines without a header; such lines are read in the spec's column order,
# which model_fn records here because input_fn is not given the model.
_csv_columns: list[str] = []
PARQUET = "application/x-parquet"


@dataclass(frozen=True)
class LineBatch:
    """A batch-transform body, scored row by row."""

    body: bytes
    media_type: str
    csv_columns: tuple[str, ...] | None = None  # the file's header, as the trigger read it


@dataclass(frozen=True)
class RealTimeRequest:
    """A real-time body's claims, validated in ``predict_fn`` (which has the model's spec)."""

    records: list[dict[str, Any]]
    from_csv: bool  # every value is text


@dataclass(frozen=True)
class LineResults:
    """One result per input row: a prediction or ``{"claim_id", "error"}``."""

    results: list[dict[str, Any]]


def in_batch_transform() -> bool:
    return bool(os.environ.get(REJECTED_URI_ENV))


def model_fn(model_dir: str) -> RiskModel:
    model = RiskModel.load(model_dir)
    use_model(model)
    # The libraries and the model are a few hundred thousand long-lived objects. Frozen, the cyclic
    # garbage collector stops rescanning them whenever a batch's dicts trigger a full collection,
    # which otherwise added 150 ms to one batch of 1000 claims in ten.
    gc.freeze()
    return model


def use_model(model: RiskModel) -> None:
    """Header-less CSV is read in this model's spec order (the local server calls it on a swap)."""
    _csv_columns[:] = [c.name for c in model.spec.columns if c.role != ColumnRole.IGNORE]


def input_fn(request_body: bytes | str, request_content_type: str) -> RealTimeRequest | LineBatch:
    if in_batch_transform():
        base = (request_content_type or "").split(";")[0].strip().lower()
        kind = PARQUET if base == PARQUET else media_type(request_content_type)
        if kind in (CSV, JSON_LINES, PARQUET):
            body = request_body.encode("utf-8") if isinstance(request_body, str) else request_body
            columns = declared_csv_columns(os.environ) if kind == CSV else None
            return LineBatch(body, kind, tuple(columns) if columns else None)
    records = parse_records(request_body, request_content_type, _csv_columns)
    return RealTimeRequest(records, from_csv=media_type(request_content_type) == CSV)


def predict_fn(records: RealTimeRequest | LineBatch, model: RiskModel) -> list[dict[str, Any]] | LineResults:
    if isinstance(records, LineBatch):
        from shared.ml.batch_scoring import InputFormat, score_lines

        kind = {CSV: InputFormat.CSV, JSON_LINES: InputFormat.JSON_LINES}.get(
            records.media_type, InputFormat.PARQUET
        )
        results = score_lines(model, records.body, kind, csv_columns=records.csv_columns)
        publish_rejections(results)
        return LineResults(results)
    # Held to the API's rules first: the endpoint is reachable without the API in front.
    valid = validated_records(records.records, model.spec, as_text=records.from_csv)
    return model.predict_records(valid)


def publish_rejections(results: list[dict[str, Any]]) -> str | None:
    """The mini-batch's rejected rows, with their reasons, as one JSON Lines part under the job's
    rejected prefix (its place in the batch is its line in the ``.out`` file too); the part's URI."""
    rejected = [
        {"line_in_batch": i + 1, "claim_id": r.get("claim_id", ""), "reason": r["error"]}
        for i, r in enumerate(results)
        if "error" in r
    ]
    if not rejected:
        return None
    import uuid

    import orjson

    from shared.adapters.artifacts import store_for

    prefix = os.environ[REJECTED_URI_ENV].rstrip("/")
    uri = f"{prefix}/part-{uuid.uuid4().hex}.jsonl"
    store_for(uri).write_bytes(
        uri, b"".join(orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in rejected)
    )
    return uri


def output_fn(predictions: list[dict[str, Any]] | LineResults, accept: str) -> bytes:
    if isinstance(predictions, LineResults):
        from shared.ml.batch_scoring import render_line_results

        return render_line_results(predictions.results, as_csv=media_type(accept) == CSV)
    body, _ = render_predictions(predictions, accept)
    return body


def handle(model: RiskModel, body: bytes | str, content_type: str, accept: str) -> tuple[bytes, str]:
    """One request as the container runs it; returns the body and its media type."""
    return output_fn(predict_fn(input_fn(body, content_type), model), accept), media_type(accept)
