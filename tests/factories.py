"""Claims for tests: one place for the brief's minimal claim, changed per test."""

from __future__ import annotations

from typing import Any


def minimal_claim(**changes: Any) -> dict[str, Any]:
    """The product brief's fields only; pass ``field=None`` to drop a field."""
    claim: dict[str, Any] = {
        "claim_id": "CLM-1",
        "claim_amount": 15000,
        "claim_type": "auto",
        "customer_age": 35,
        "policy_tenure": 2,
        "claim_history": 1,
        "location": "urban",
    }
    claim.update(changes)
    return {k: v for k, v in claim.items() if v is not None}
