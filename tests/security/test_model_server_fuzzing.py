"""Schemathesis against the model server, as the API is fuzzed (tests/integration/test_api_fuzzing.py):
generated requests, valid and invalid, on SageMaker's serving contract never get a 5xx. A batch
transform, or any caller the endpoint's policy admits, reaches it without the API in front.

The server has no OpenAPI document of its own (SageMaker's contract is two routes); the one here is
written from that contract and the API's claim schema."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sagemaker_jobs.inference.model_server import create_model_server
from shared.schema import Claim

pytestmark = pytest.mark.slow
EXAMPLES_PER_OPERATION = 120
MODES = ("positive", "negative")


def serving_contract() -> dict[str, Any]:
    # The claim's schema as the API's own OpenAPI document gives it (Powertools writes it from Claim).
    from lambdas.api import handler

    schemas = json.loads(handler.app.get_openapi_json_schema())["components"]["schemas"]
    assert "Claim" in schemas and Claim.__name__ == "Claim"
    body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 20,
                            "items": {"$ref": "#/components/schemas/Claim"},
                        }
                    },
                    "required": ["instances"],
                }
            }
        },
    }
    answers = {"200": {"description": "predictions"}, "400": {"description": "invalid claims"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "SageMaker serving contract", "version": "1"},
        "paths": {
            "/ping": {"get": {"responses": {"200": {"description": "alive"}}}},
            "/invocations": {"post": {"requestBody": body, "responses": answers}},
            "/endpoints/{endpoint_name}/invocations": {
                "post": {
                    "parameters": [
                        {
                            "name": "endpoint_name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": body,
                    "responses": answers,
                }
            },
        },
        "components": {"schemas": schemas},
    }


def test_generated_requests_get_no_server_error(model_dir: Path) -> None:
    import schemathesis
    from schemathesis.core.result import Ok
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_dict(serving_contract())
    app = create_model_server(model_dir, monitoring=None)
    schema.app = app
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []
    strategy = st.one_of(
        [op.as_strategy(generation_mode=GenerationMode(mode)) for op in operations for mode in MODES]
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION * len(operations),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def exercise(case: Any) -> None:
        response = case.call(app=app)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(f"{case.method} {case.path} {case.body!r:.300} → {response.status_code}")

    exercise()
    assert not server_errors, server_errors[:5]
    assert statuses[200] > 0 and statuses[400] > 50, statuses  # generated valid claims are rare
    print(f"generated requests by status: {dict(sorted(statuses.items()))}")
