"""One rule for repeated claim ids: the batch API refuses exactly the claims a claims file rejects."""

from __future__ import annotations

import json

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from lambdas.api import handler
from shared.feature_spec import claims_spec
from shared.ml.validation import REASON, ROW_NUMBER, validate_frame
from shared.schema import EXAMPLE_CLAIM, repeated_claim_ids
from tests.unit.test_api_handler import FakeEndpoint, call

IDS = st.lists(st.sampled_from(["CLM-1", "CLM-2", "CLM-3", "CLM-4"]), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(ids=IDS)
def test_the_file_rule_and_the_batch_rule_name_the_same_repeats(ids: list[str]) -> None:
    frame = pd.DataFrame([{**EXAMPLE_CLAIM, "claim_id": claim_id} for claim_id in ids]).astype(str)
    result = validate_frame(frame, claims_spec(), require_target=False)
    from_file = {
        int(row[ROW_NUMBER]) - 1: int(str(row[REASON]).rsplit(" ", 1)[1]) - 1
        for _, row in result.rejected.iterrows()
    }
    assert from_file == repeated_claim_ids(ids)


def test_the_batch_api_refuses_repeated_ids_naming_each_repeat() -> None:
    handler.use_endpoint(endpoint := FakeEndpoint())
    try:
        claims = [{**EXAMPLE_CLAIM, "claim_id": claim_id} for claim_id in ("A", "B", "A", "B", "A")]
        response = call("POST", "/api/v1/predict/batch", json.dumps({"claims": claims}))
    finally:
        handler.use_endpoint(None)
    assert response["statusCode"] == 422 and endpoint.sent == []
    details = json.loads(response["body"])["error"]["details"]
    assert [(d["field"], d["message"]) for d in details] == [
        ("claims.2.claim_id", "duplicate of claims.0.claim_id"),
        ("claims.3.claim_id", "duplicate of claims.1.claim_id"),
        ("claims.4.claim_id", "duplicate of claims.0.claim_id"),
    ]
