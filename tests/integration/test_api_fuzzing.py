"""Schemathesis against the local API's own OpenAPI document: generated requests, valid and invalid,
never get a 5xx. The API runs in-process with the real handler, and scores through a real model server."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambdas.api import handler
from local.api_gateway import create_local_api
from local.auth import Credential, LocalAuthorizer
from local.pipeline_runner import LocalModelStore
from local.servers import free_port, start_model_server, stop, wait_until_ready
from shared import auth
from shared.adapters.endpoint import HttpEndpoint
from shared.adapters.model_catalog import LocalModelCatalog
from tests.unit.test_api_handler import FakeStarter

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from local.pipeline_runner import PipelineRun

pytestmark = pytest.mark.slow
TOKEN = "fuzzing-token"
EXAMPLES_PER_OPERATION = 260  # five operations: over 1000 requests, in well under a minute
MODES = ("positive", "negative")


@pytest.fixture(scope="module")
def local_api(trained_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Starlette]:
    home = tmp_path_factory.mktemp("fuzz-home")
    model_dir = Path(LocalModelStore(home / "models").deploy(trained_run.model_tarball))
    port = free_port()
    server = start_model_server(
        model_dir, "127.0.0.1", port, home / "model.log", {"CLAIMS_RISK_HOME": str(home)}
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/ping", server)
        handler.use_ports(
            endpoint=HttpEndpoint(f"http://127.0.0.1:{port}"),
            catalog=LocalModelCatalog(home / "models"),
            starter=FakeStarter(),  # a retrain request must not start real pipelines here
        )
        authorizer = LocalAuthorizer({TOKEN: Credential("fuzzer", frozenset(auth.ALL_SCOPES))}, 0)
        yield create_local_api(handler.lambda_handler, authorizer=authorizer)
    finally:
        handler.use_ports()
        stop(server)


def test_a_thousand_generated_requests_get_no_server_error(local_api: Starlette) -> None:
    import schemathesis
    from schemathesis.core.result import Ok
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_asgi("/swagger?format=json", local_api)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # every operation of our document must load
        operations.append(result.ok())
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /api/v1/predict",
        "POST /api/v1/predict/batch",
        "GET /api/v1/models/current",
        "POST /api/v1/models/retrain",
        "GET /health",
    }
    statuses: collections.Counter[int] = collections.Counter()
    server_errors: list[str] = []
    strategy = st.one_of(
        [op.as_strategy(generation_mode=GenerationMode(mode)) for op in operations for mode in MODES]
    )

    @settings(
        max_examples=EXAMPLES_PER_OPERATION * len(operations),
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def exercise(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            server_errors.append(f"{case.method} {case.path} {case.body!r:.300} → {response.status_code}")

    exercise()
    assert sum(statuses.values()) >= 1000, statuses
    assert not server_errors, server_errors[:5]
    assert statuses[200] > 100 and any(400 <= code < 500 for code in statuses), statuses
    print(f"generated requests by status: {dict(sorted(statuses.items()))}")
