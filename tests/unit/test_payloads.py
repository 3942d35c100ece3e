from __future__ import annotations

import json

import pytest

from shared.payloads import PayloadError, media_type, parse_records, render_predictions

COLUMNS = ["claim_id", "claim_amount", "claim_type"]


def test_json_forms() -> None:
    one = {"claim_id": "A", "claim_amount": 10}
    assert parse_records(json.dumps(one), "application/json", COLUMNS) == [one]
    assert parse_records(json.dumps([one, one]), "application/json", COLUMNS) == [one, one]
    assert parse_records(json.dumps({"instances": [one]}), "application/json; charset=utf-8", COLUMNS) == [
        one
    ]


def test_json_lines_and_csv_with_and_without_header() -> None:
    lines = '{"claim_id": "A"}\n\n{"claim_id": "B"}\n'
    assert [r["claim_id"] for r in parse_records(lines, "application/jsonlines", COLUMNS)] == ["A", "B"]
    with_header = "claim_id,claim_amount,claim_type\nA,10,auto\n"
    headerless = "A,10,auto\nB,,home\n"
    assert parse_records(with_header, "text/csv", COLUMNS) == [
        {"claim_id": "A", "claim_amount": "10", "claim_type": "auto"}
    ]
    assert parse_records(headerless, "text/csv", COLUMNS)[1] == {"claim_id": "B", "claim_type": "home"}


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ("", "application/json", "empty"),
        ("{oops", "application/json", "malformed JSON"),
        ("[1, 2]", "application/json", "not a JSON object"),
        ('{"a": 1}\n{bad', "application/jsonlines", "line 2"),
        ("A,1,auto,extra,fields", "text/csv", "fields"),
        (b"\xff\xfe", "application/json", "UTF-8"),
        ('{"claim_amount": NaN}', "application/json", "malformed JSON"),  # strict JSON only
        ('{"claim_amount": 1e999}', "application/json", "infinity"),
        ("{}", "application/xml", "unsupported content type"),
    ],
)
def test_unreadable_bodies_say_why(body: str | bytes, content_type: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_records(body, content_type, COLUMNS)


def test_rendering_in_each_format() -> None:
    predictions = [
        {
            "claim_id": "A",
            "risk_level": "low",
            "risk_score": 0.1,
            "confidence": 0.9,
            "model_version": "v",
            "risk_factors": [{"factor": "claim_amount", "importance": 0.6}],
        }
    ]
    body, kind = render_predictions(predictions, "application/json")
    assert json.loads(body) == {"predictions": predictions} and kind == "application/json"
    body, kind = render_predictions(predictions, "application/jsonlines")
    assert json.loads(body.strip()) == predictions[0]
    body, kind = render_predictions(predictions, "text/csv")
    assert body == b"A,low,0.1,0.9,v,claim_amount:0.6\n" and kind == "text/csv"
    assert media_type("*/*") == "application/json"
