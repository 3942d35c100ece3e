"""The capture keeps only the spec's non-personal model inputs as sent (and the prediction): personal
fields are dropped or pseudonymized and anything else is dropped, whatever the body's shape."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from sagemaker_jobs.inference.model_server import ServerMonitoring, create_model_server
from shared.capture import (
    CapturePolicy,
    CaptureWriter,
    captured_fields,
    iter_capture_files,
    parse_capture_line,
    personal_fields,
    redact_body,
)
from shared.feature_spec import claims_spec
from shared.payloads import parse_records
from shared.schema import EXAMPLE_CLAIM

SPEC = claims_spec()
PERSONAL = personal_fields(SPEC)
RAW = captured_fields(SPEC)
COLUMNS = [c.name for c in SPEC.columns]
SECRET = "SECRET-"  # every value that must not survive starts with it
KEY = b"k" * 32


def policy(pii: str) -> CapturePolicy:
    return CapturePolicy(pii=pii, key=KEY, personal_fields=PERSONAL, raw_fields=RAW)  # type: ignore[arg-type]


unknown_keys = st.text(min_size=1, max_size=12).filter(lambda k: k not in COLUMNS and k != "instances")
secret_values = st.builds(lambda s: SECRET + s, st.text(max_size=10))
plain_values = st.one_of(
    st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans()
)


@st.composite
def claims(draw: st.DrawFn) -> dict[str, Any]:
    claim: dict[str, Any] = {name: draw(plain_values) for name in sorted(RAW)}
    for name in PERSONAL:  # personal fields carry secrets
        claim[name] = draw(secret_values)
    for _ in range(draw(st.integers(0, 3))):  # keys the spec does not know
        claim[draw(unknown_keys)] = draw(st.one_of(secret_values, st.lists(secret_values, max_size=2)))
    if draw(st.booleans()):  # an allowed field holding a nested value
        claim["claim_amount"] = {"nested": draw(secret_values)}
    return claim


@st.composite
def json_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    batch = draw(st.lists(claims(), min_size=1, max_size=3))
    shape = draw(st.sampled_from(["object", "list", "instances-list", "instances-object", "jsonlines"]))
    if shape == "jsonlines":
        return b"".join(json.dumps(c).encode() + b"\n" for c in batch), "application/jsonlines"
    payload: Any = {
        "object": batch[0],
        "list": batch,
        "instances-list": {"instances": batch},
        "instances-object": {"instances": batch[0]},
    }[shape]
    if isinstance(payload, dict) and "instances" in payload and draw(st.booleans()):
        payload[draw(unknown_keys)] = draw(secret_values)  # a top-level key beside the instances
    return json.dumps(payload).encode(), "application/json"


@st.composite
def csv_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    extra = draw(st.lists(unknown_keys.filter(lambda k: "\n" not in k and "\r" not in k), max_size=2))
    header = [*COLUMNS, *extra]
    rows = []
    for claim in draw(st.lists(claims(), min_size=1, max_size=3)):
        # CSV cells are text: a cell of an allowed column is kept as sent (the server refuses a
        # request whose cell is not a valid value, and refused requests are never captured).
        row = [SECRET + "x" if name in PERSONAL else _cell(claim.get(name)) for name in COLUMNS]
        rows.append(row + [SECRET + "extra"] * (len(extra) + draw(st.integers(0, 2))))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if draw(st.booleans()):
        writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode(), "text/csv"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(json_bodies(), csv_bodies()), pii=st.sampled_from(["drop", "pseudonymize"]))
def test_no_personal_or_unknown_value_reaches_the_capture_in_any_shape(
    body: tuple[bytes, str], pii: str
) -> None:
    data, content_type = body
    captured = redact_body(data, content_type, policy(pii), COLUMNS)
    assert captured is not None
    assert SECRET.encode() not in captured
    # What is kept is readable by the drift job, as the model server reads requests.
    records = parse_records(captured, content_type, COLUMNS) if captured.strip(b'\n{}[]instances":') else []
    for record in records:
        assert set(record) <= RAW | PERSONAL
        for name in PERSONAL & set(record):
            assert pii == "pseudonymize" and str(record[name]).startswith("pii:")


def test_allowed_inputs_are_kept_as_sent() -> None:
    claim = {**EXAMPLE_CLAIM, "gender": "female", "claimant_name": "Jane Doe"}
    kept = json.loads(
        redact_body(json.dumps({"instances": claim}).encode(), "application/json", policy("drop")) or b""
    )
    assert kept == {"instances": [{k: v for k, v in EXAMPLE_CLAIM.items() if k in RAW}]}
    assert {"claim_id", "claim_amount", "claim_type", "incident_date"} <= set(kept["instances"][0])


@pytest.mark.parametrize("pii", ["drop", "pseudonymize"])
def test_the_model_server_captures_one_claim_under_instances_without_personal_data(
    model_dir: Path, tmp_path: Path, pii: str
) -> None:
    writer = CaptureWriter(tmp_path / "capture", policy(pii), csv_columns=COLUMNS)
    app = create_model_server(model_dir, ServerMonitoring(capture=writer))
    claim = {**EXAMPLE_CLAIM, "description": "Jane Doe of 1 High St hit me", "claimant_name": "Jane Doe"}
    with TestClient(app) as client:
        for body in ({"instances": claim}, claim, [claim], {"instances": [claim], "note": "Jane Doe"}):
            assert client.post("/invocations", json=body).status_code == 200
        writer.flush()
    lines = [line for f in iter_capture_files(tmp_path / "capture") for line in f.read_text().splitlines()]
    assert len(lines) == 4
    for line in lines:
        exchange = parse_capture_line(line)
        assert b"Jane Doe" not in exchange.request and b"High St" not in exchange.request
        [record] = json.loads(exchange.request)["instances"]
        assert record["claim_amount"] == EXAMPLE_CLAIM["claim_amount"]
        if pii == "drop":
            assert not PERSONAL & set(record)
        else:
            assert all(str(record[name]).startswith("pii:") for name in PERSONAL & set(claim))
        assert json.loads(exchange.response)["predictions"][0]["claim_id"] == EXAMPLE_CLAIM["claim_id"]


def _cell(value: Any) -> str:
    return "" if value is None or isinstance(value, dict) else str(value)
