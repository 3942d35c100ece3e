"""Data capture keeps the sampled share of requests and never keeps a personal value in the clear."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from shared.capture import (
    CapturedExchange,
    CapturePolicy,
    CaptureWriter,
    iter_capture_files,
    parse_capture_line,
    personal_fields,
)
from shared.feature_spec import claims_spec
from tests.factories import minimal_claim

PERSONAL = frozenset({"description", "gender"})
SECRET_TEXT = "Jane Doe of 12 Elm Street hit my car"
RESPONSE = b'{"predictions": [{"claim_id": "C-1", "risk_level": "low"}]}'


def request_body(claim_id: str = "C-1") -> bytes:
    claim = minimal_claim(claim_id=claim_id, description=SECRET_TEXT, gender="female")
    return json.dumps({"instances": [claim]}).encode()


def captured(root: Path) -> list[CapturedExchange]:
    return [
        parse_capture_line(line)
        for path in iter_capture_files(root)
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def write(root: Path, policy: CapturePolicy, bodies: list[bytes], seed: int = 0) -> list[bool]:
    writer = CaptureWriter(root, policy, rng=random.Random(seed))
    kept = [writer.submit("claims-risk", b, "application/json", RESPONSE, "application/json") for b in bodies]
    writer.close()
    return kept


@pytest.mark.parametrize(("percent", "low", "high"), [(0, 0, 0), (100, 2000, 2000), (30, 540, 660)])
def test_the_sampled_share_of_requests_is_captured(
    tmp_path: Path, percent: float, low: int, high: int
) -> None:
    kept = write(tmp_path, CapturePolicy(percent=percent), [request_body(f"C-{i}") for i in range(2000)])
    lines = captured(tmp_path)
    assert low <= len(lines) <= high
    assert len(lines) == sum(kept)
    # In SageMaker's layout: endpoint / variant / yyyy / mm / dd / hh.
    for path in iter_capture_files(tmp_path):
        assert path.relative_to(tmp_path).parts[:2] == ("claims-risk", "AllTraffic")


def test_dropped_personal_fields_are_gone_and_the_rest_is_kept(tmp_path: Path) -> None:
    write(tmp_path, CapturePolicy(personal_fields=PERSONAL), [request_body()])
    [exchange] = captured(tmp_path)
    [claim] = json.loads(exchange.request)["instances"]
    assert "description" not in claim and "gender" not in claim
    assert claim["claim_id"] == "C-1" and claim["claim_amount"] == minimal_claim()["claim_amount"]
    assert json.loads(exchange.response) == json.loads(RESPONSE)
    assert "Jane" not in "".join(p.read_text() for p in iter_capture_files(tmp_path))


def _tokens(root: Path, key: bytes) -> dict[str, str]:
    write(root, CapturePolicy(pii="pseudonymize", key=key, personal_fields=PERSONAL), [request_body()])
    [exchange] = captured(root)
    [claim] = json.loads(exchange.request)["instances"]
    return {"description": claim["description"], "gender": claim["gender"]}


def test_pseudonyms_are_stable_per_key_and_hide_the_value(tmp_path: Path) -> None:
    first = _tokens(tmp_path / "a", b"key-one")
    again = _tokens(tmp_path / "b", b"key-one")
    other = _tokens(tmp_path / "c", b"key-two")
    assert first == again
    assert first["description"] != other["description"] and first["gender"] != other["gender"]
    assert first["description"] != first["gender"]
    for folder in ("a", "b", "c"):
        text = "".join(p.read_text() for p in iter_capture_files(tmp_path / folder))
        assert "Jane" not in text and "Elm Street" not in text and "female" not in text


def test_csv_without_a_header_keeps_its_columns_in_place(tmp_path: Path) -> None:
    columns = ["claim_id", "claim_amount", "description", "gender"]
    writer = CaptureWriter(tmp_path, CapturePolicy(personal_fields=PERSONAL), csv_columns=columns)
    writer.submit("claims-risk", b"C-9,1200,Jane Doe crashed,female\n", "text/csv", b"C-9,low\n", "text/csv")
    writer.close()
    [exchange] = captured(tmp_path)
    assert exchange.request.decode().strip() == "C-9,1200,,"
    assert exchange.request_type == "text/csv"


def test_a_body_that_cannot_be_read_is_not_captured(tmp_path: Path) -> None:
    kept = write(tmp_path, CapturePolicy(personal_fields=PERSONAL), [b"{not json " + SECRET_TEXT.encode()])
    assert kept == [True]
    assert captured(tmp_path) == []


def test_pseudonymizing_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        CapturePolicy(pii="pseudonymize")


def test_the_claim_schema_marks_free_text_and_protected_attributes_as_personal() -> None:
    fields = personal_fields(claims_spec())
    assert {"description", "gender"} <= fields
    assert "claim_id" not in fields and "claim_amount" not in fields
