"""Hostile bodies get a 4xx that says why, from the local API and from the model server alike, and
never a 5xx: pathological JSON, arrays where one claim belongs, values the rules refuse, oversized
bodies (refused with 413 before they are read) and endpoint names that are not names."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.testclient import TestClient

from lambdas.api import handler
from local.api_gateway import create_local_api
from local.auth import Credential, LocalAuthorizer
from sagemaker_jobs.inference.model_server import create_model_server
from shared import auth
from shared.adapters.endpoint import HttpEndpoint
from shared.request_limits import MAX_API_BODY_BYTES, MAX_ENDPOINT_BODY_BYTES
from shared.schema import EXAMPLE_CLAIM
from tests.unit.test_api_handler import MANIFEST, FakeCatalog, FakeStarter

TOKEN = "hostile-bodies"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLAIM = json.dumps(EXAMPLE_CLAIM)


def with_field(raw_value: str) -> str:
    """The example claim with an extra (ignored) field holding ``raw_value`` as raw JSON text."""
    return CLAIM[:-1] + f', "ignored": {raw_value}}}'


def with_amount(raw_value: str) -> str:
    return json.dumps({**EXAMPLE_CLAIM, "claim_amount": "AMOUNT"}).replace('"AMOUNT"', raw_value)


PATHOLOGICAL: dict[str, str] = {
    "100k-deep arrays": "[" * 100_000 + "]" * 100_000,
    "100k-deep objects": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "5000-deep inside an ignored field": with_field("[" * 5000 + "]" * 5000),
    "5000-digit integer": with_amount("9" * 5000),
    "5000-digit integer in an ignored field": with_field("1" * 5000),
    "NaN": with_amount("NaN"),
    "Infinity": with_amount("Infinity"),
    "1e400": with_amount("1e400"),
    "negative amount": with_amount("-5"),
    "amount as a list": with_amount("[1, 2]"),
    "amount as an object": with_amount('{"value": 1}'),
    "amount as text": with_amount('"a lot"'),
    "empty object": "{}",
    "null": "null",
    "a string": '"claim"',
    "truncated": CLAIM[:-10],
    "trailing garbage": CLAIM + "}}",
    "lone surrogate": json.dumps({**EXAMPLE_CLAIM, "description": "\ud800"}),
    "control characters": CLAIM.replace("rear ended", "rear\u0000ended"),
    "a 1 MB description": json.dumps({**EXAMPLE_CLAIM, "description": "x" * 1_000_000}),
}


@pytest.fixture(scope="module")
def model_server(model_dir: Path) -> Starlette:
    return create_model_server(model_dir, monitoring=None)


@pytest.fixture(scope="module")
def served_model(model_server: Starlette) -> Iterator[str]:
    """The model server on a real socket (127.0.0.1), for the API to call and for raw-socket probes."""
    with LocalServer(model_server) as url:
        yield url


@pytest.fixture(scope="module")
def local_api(served_model: str) -> Iterator[Starlette]:
    handler.use_ports(
        endpoint=HttpEndpoint(served_model), catalog=FakeCatalog(MANIFEST), starter=FakeStarter()
    )
    authorizer = LocalAuthorizer({TOKEN: Credential("attacker", frozenset(auth.ALL_SCOPES))}, 0)
    yield create_local_api(handler.lambda_handler, authorizer=authorizer)
    handler.use_ports()


class LocalServer:
    """uvicorn on 127.0.0.1 in a thread, stopped on exit."""

    def __init__(self, app: Starlette) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_the_api_answers_pathological_bodies_with_a_4xx(local_api: Starlette, name: str) -> None:
    with TestClient(local_api) as client:
        for path in ("/api/v1/predict", "/api/v1/predict/batch"):
            body = PATHOLOGICAL[name]
            if path.endswith("batch") and body.startswith("{") and name not in {"empty object"}:
                body = '{"claims": [' + body + "]}"
            response = client.post(path, content=body, headers={**AUTH, "Content-Type": "application/json"})
            assert 400 <= response.status_code < 500, (name, path, response.status_code, response.text[:300])
            assert response.json()["error"]["message"], "the answer says why"


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_the_model_server_answers_pathological_bodies_with_a_4xx(model_server: Starlette, name: str) -> None:
    with TestClient(model_server) as client:
        for body in (PATHOLOGICAL[name], '{"instances": [' + PATHOLOGICAL[name] + "]}"):
            response = client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
            if name == "control characters" and response.status_code == 200:
                continue  # a NUL inside a description is valid JSON and a valid description
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:300])


def test_one_claim_route_refuses_an_array_and_scores_nothing(local_api: Starlette, served_model: str) -> None:
    with TestClient(local_api) as client:
        for body in ([EXAMPLE_CLAIM, {"claim_id": "bad"}], [EXAMPLE_CLAIM], []):
            response = client.post("/api/v1/predict", json=body, headers=AUTH)
            assert response.status_code == 422, response.text
            assert "JSON array" in response.json()["error"]["message"]
        batch = client.post("/api/v1/predict/batch", json=[{"claims": [EXAMPLE_CLAIM]}], headers=AUTH)
        assert batch.status_code == 422


def test_a_base64_body_that_is_not_text_is_a_400(local_api: Starlette) -> None:
    with TestClient(local_api) as client:
        response = client.post(
            "/api/v1/predict",
            content=b"\xff\xfe\x00garbage",
            headers={**AUTH, "Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text


def test_the_model_server_refuses_what_the_api_refuses(model_server: Starlette) -> None:
    with TestClient(model_server) as client:
        invalid: list[list[dict[str, object]]] = [
            [{}],
            [{**EXAMPLE_CLAIM, "claim_amount": -100}],
            [EXAMPLE_CLAIM, {"claim_id": "x"}],
        ]
        for claims in invalid:
            response = client.post("/invocations", json={"instances": claims})
            assert response.status_code == 400, response.text
            assert "claim" in response.json()["error"]["message"]
        csv_body = "claim_id,claim_amount,claim_type\nC-1,-5,auto\n"
        response = client.post("/invocations", content=csv_body, headers={"Content-Type": "text/csv"})
        assert response.status_code == 400 and "claim_amount" in response.text
        good = client.post("/invocations", json={"instances": [EXAMPLE_CLAIM]})
        assert (
            good.status_code == 200 and good.json()["predictions"][0]["claim_id"] == EXAMPLE_CLAIM["claim_id"]
        )


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../../etc",
        "a" * 64,
        "a" * 5000,
        "-lead",
        "trail-",
        "has_underscore",
        "sp ace",
        "%2e%2e",
        "claims-risk-other",
    ],
)
def test_endpoint_names_are_checked_before_any_use(model_dir: Path, tmp_path: Path, name: str) -> None:
    from sagemaker_jobs.inference.model_server import EndpointMetrics, ServerMonitoring
    from shared.adapters.metrics import LocalMetricsSink
    from shared.capture import CapturePolicy, CaptureWriter

    metrics_file = tmp_path / "metrics.jsonl"
    monitoring = ServerMonitoring(
        CaptureWriter(tmp_path / "capture", CapturePolicy()), EndpointMetrics(LocalMetricsSink(metrics_file))
    )
    body = json.dumps({"instances": [EXAMPLE_CLAIM]}).encode()
    # A bare socket: an HTTP client would resolve "..", the very thing under test.
    with LocalServer(create_model_server(model_dir, monitoring)) as url:
        head = (
            f"POST /endpoints/{quote(name, safe='/.%')}/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        status, answer, _ = raw_request(url, head, body)
    assert status in (400, 404), (name, status, answer[:200])
    assert status == 404 or b"ValidationError" in answer
    assert not (tmp_path / "capture").exists() or not any((tmp_path / "capture").rglob("*.jsonl"))
    assert not metrics_file.exists() or name not in metrics_file.read_text()
    assert not any(tmp_path.parent.glob("etc*"))


def test_the_endpoint_name_rule_is_sagemakers() -> None:
    import botocore.session

    from sagemaker_jobs.inference.model_server import ENDPOINT_NAME, ENDPOINT_NAME_MAX

    shape = botocore.session.get_session().get_service_model("sagemaker-runtime").shape_for("EndpointName")
    assert (f"^{ENDPOINT_NAME.pattern}", ENDPOINT_NAME_MAX) == (
        shape.metadata["pattern"],
        shape.metadata["max"],
    )


def raw_request(url: str, head: str, body: bytes = b"", timeout_s: float = 10.0) -> tuple[int, bytes, float]:
    """Send a request over a bare socket; the status, the answer and the seconds it took."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
        connection.sendall(head.encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 10:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer, time.monotonic() - started


@pytest.mark.parametrize("target", ["api", "model"])
def test_a_declared_huge_body_is_refused_with_413_before_it_is_read(
    local_api: Starlette, served_model: str, target: str
) -> None:
    """A 1 GB Content-Length with none of the body sent: the answer comes at once (nothing waits for, or
    holds, the body)."""
    app_url = served_model
    path = "/invocations"
    server = None
    if target == "api":
        server = LocalServer(local_api)
        app_url = server.__enter__()
        path = "/api/v1/predict/batch"
    try:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {1 << 30}\r\n\r\n"
        )
        status, answer, seconds = raw_request(app_url, head, b'{"claims": [')
        assert status == 413, answer[:300]
        assert b"payload_too_large" in answer and seconds < 5
    finally:
        if server is not None:
            server.__exit__()


@pytest.mark.parametrize(
    ("target", "limit"), [("api", MAX_API_BODY_BYTES), ("model", MAX_ENDPOINT_BODY_BYTES)]
)
def test_a_chunked_body_over_the_limit_is_refused_as_it_passes_it(
    local_api: Starlette, model_server: Starlette, target: str, limit: int
) -> None:
    app = local_api if target == "api" else model_server
    path = "/api/v1/predict/batch" if target == "api" else "/invocations"

    def chunks() -> Iterator[bytes]:
        block = b" " * 65536
        for _ in range(limit // len(block) + 2):
            yield block

    with TestClient(app) as client:
        response = client.post(path, content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
    # Just under the limit is read and judged on its content, not its size.
    with TestClient(app) as client:
        body = json.dumps({"claims": [EXAMPLE_CLAIM]} if target == "api" else {"instances": [EXAMPLE_CLAIM]})
        padded = body + " " * (limit - len(body) - 10)
        response = client.post(path, content=padded, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 200, response.text[:300]
