"""``POST /invocations`` is answered before Starlette's routing (InvocationsFirst); a path under a
root_path still goes through the routes. Both must give the same answers: status, headers and body,
for scores, refusals, the runtime path's errors and every media type; and capture and metrics must
record the shortcut's requests as they recorded the routes'."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from sagemaker_jobs.inference.model_server import EndpointMetrics, ServerMonitoring, create_model_server
from shared.capture import CapturePolicy, CaptureWriter, iter_capture_files, parse_capture_line
from shared.ports import MetricDatum
from tests.factories import minimal_claim

PREFIX = "/behind-a-proxy"


@pytest.fixture(scope="module")
def clients(model_dir: Path) -> tuple[TestClient, TestClient]:
    app = create_model_server(model_dir, monitoring=None)
    return TestClient(app), TestClient(app, root_path=PREFIX)


def _seen(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(k, v) for k, v in response.headers.multi_items() if k not in {"date", "server"}]
    return response.status_code, headers, response.content


CLAIMS = [minimal_claim(claim_id=f"C-{n}", claim_amount=1000 + 37 * n) for n in range(3)]
REQUESTS: list[tuple[str, dict[str, str], bytes]] = [
    ("/invocations", {"content-type": "application/json"}, json.dumps(CLAIMS[0]).encode()),
    ("/invocations", {"content-type": "application/json"}, json.dumps({"instances": CLAIMS}).encode()),
    ("/invocations", {"content-type": "application/json", "accept": "text/csv"}, json.dumps(CLAIMS).encode()),
    (
        "/invocations",
        {"content-type": "application/json", "accept": "application/jsonlines"},
        json.dumps(CLAIMS).encode(),
    ),
    ("/invocations", {}, json.dumps(CLAIMS[1]).encode()),  # no content type: JSON
    ("/invocations", {"content-type": "application/json"}, b"{not json"),
    (
        "/invocations",
        {"content-type": "application/json"},
        json.dumps({**CLAIMS[0], "claim_amount": -5}).encode(),
    ),
    ("/invocations", {"content-type": "application/xml"}, b"<claim/>"),
    (
        "/invocations",
        {"content-type": "application/json", "accept": "image/png"},
        json.dumps(CLAIMS[0]).encode(),
    ),
    ("/invocations", {"content-type": "application/json"}, b""),
    (
        "/endpoints/claims-risk/invocations",
        {"content-type": "application/json"},
        json.dumps(CLAIMS[2]).encode(),
    ),
    ("/endpoints/claims-risk/invocations", {"content-type": "application/json"}, b"[]"),
    ("/endpoints/other/invocations", {"content-type": "application/json"}, json.dumps(CLAIMS[0]).encode()),
    (
        "/endpoints/bad_name!/invocations",
        {"content-type": "application/json"},
        json.dumps(CLAIMS[0]).encode(),
    ),
]


@pytest.mark.parametrize(("path", "headers", "body"), REQUESTS)
def test_the_shortcut_answers_as_the_routes_do(
    clients: tuple[TestClient, TestClient], path: str, headers: dict[str, str], body: bytes
) -> None:
    direct, routed = clients
    shortcut = direct.post(path, content=body, headers=headers)
    through_routes = routed.post(PREFIX + path, content=body, headers=headers)
    assert _seen(shortcut) == _seen(through_routes)


@pytest.mark.parametrize("path", ["/invocations/", "/invocations/extra", "/endpoints/a/b/invocations"])
def test_other_paths_still_go_to_the_routes(clients: tuple[TestClient, TestClient], path: str) -> None:
    direct, _ = clients
    response = direct.post(path, json=CLAIMS[0], follow_redirects=False)
    assert response.status_code in {307, 404}


def test_a_get_is_still_refused_by_the_route(clients: tuple[TestClient, TestClient]) -> None:
    direct, _ = clients
    assert direct.get("/invocations").status_code == 405


class _Published:
    def __init__(self) -> None:
        self.data: list[MetricDatum] = []

    def publish(self, namespace: str, metrics: Sequence[MetricDatum]) -> None:
        self.data += metrics


def test_capture_and_metrics_record_the_shortcuts_requests(model_dir: Path, tmp_path: Path) -> None:
    sink = _Published()
    writer = CaptureWriter(tmp_path / "capture", CapturePolicy())
    watch = ServerMonitoring(capture=writer, metrics=EndpointMetrics(sink))
    sent: list[Any] = [CLAIMS[0], {"instances": CLAIMS[1:]}]
    with TestClient(create_model_server(model_dir, watch)) as client:
        for payload in sent:
            assert client.post("/invocations", json=payload).status_code == 200
        assert client.post("/invocations", content=b"{bad").status_code == 400
    lines = [
        parse_capture_line(line)
        for path in iter_capture_files(tmp_path / "capture")
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert [json.loads(x.request) for x in lines] == [json.loads(json.dumps(p)) for p in sent]
    counts = {d.name: d.value for d in sink.data if d.name.startswith("Invocation")}
    assert counts == {"Invocations": 3, "Invocation4XXErrors": 1, "Invocation5XXErrors": 0}
