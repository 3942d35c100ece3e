from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import ValidationError

from shared.schema import EXAMPLE_CLAIM, Claim
from tests.factories import minimal_claim

VALID: dict[str, Any] = minimal_claim()


def failing_fields(data: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        Claim.model_validate(data)
    return {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_every_request_of_the_brief_is_accepted(
    predict_requests: list[dict[str, Any]], contract: dict[str, Any]
) -> None:
    batch = [c for r in contract["predict_batch"]["requests"] for c in r["claims"]]
    for request in predict_requests + batch:
        assert Claim.model_validate(request).claim_id == request["claim_id"]


def test_the_documented_example_is_a_valid_claim() -> None:
    Claim.model_validate(EXAMPLE_CLAIM)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert not hasattr(Claim.model_validate({**VALID, "adjuster_notes": "x"}), "adjuster_notes")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"claim_amount": None}, "claim_amount"),
        ({"claim_amount": -5}, "claim_amount"),
        ({"claim_amount": 0}, "claim_amount"),
        ({"claim_amount": "15000"}, "claim_amount"),
        ({"claim_amount": True}, "claim_amount"),
        ({"customer_age": 500}, "customer_age"),
        ({"customer_age": 12}, "customer_age"),
        ({"customer_age": 35.5}, "customer_age"),
        ({"claim_type": "spaceship"}, "claim_type"),
        ({"location": "moon"}, "location"),
        ({"claim_history": -1}, "claim_history"),
        ({"claim_id": ""}, "claim_id"),
        ({"claim_id": "bad id with spaces"}, "claim_id"),
        ({"vehicle_age": 200}, "vehicle_age"),
        ({"police_report": "maybe"}, "police_report"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(change: dict[str, Any], field: str) -> None:
    data = {**VALID, **change}
    if change.get(field, "x") is None:
        del data[field]
    assert field in failing_fields(data)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"policy_start_date": "2024-05-01", "incident_date": "2024-04-01"}, "incident_date"),
        ({"incident_date": "2024-05-01", "report_date": "2024-04-30"}, "report_date"),
        ({"sum_insured": 1000, "deductible": 5000}, "deductible"),
        ({"policy_tenure": 40, "customer_age": 30}, "policy_tenure"),
    ],
)
def test_cross_field_business_rules_name_the_later_field(extra: dict[str, Any], field: str) -> None:
    assert field in failing_fields({**VALID, **extra})


def test_dates_in_the_future_are_rejected() -> None:
    tomorrow_plus = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)).isoformat()
    assert "report_date" in failing_fields({**VALID, "report_date": tomorrow_plus})


def test_dates_in_order_are_accepted() -> None:
    claim = Claim.model_validate(
        {
            **VALID,
            "policy_start_date": "2020-01-01",
            "incident_date": "2024-01-10",
            "report_date": "2024-01-10",
        }
    )
    assert claim.report_date == dt.date(2024, 1, 10)
