"""Claims for tests, derived from the schema's documented example so there is one definition."""

from __future__ import annotations

from typing import Any

from shared.schema import EXAMPLE_CLAIM, Claim


def minimal_claim(**changes: Any) -> dict[str, Any]:
    """The example claim cut down to the required fields (the product brief's); ``field=None`` drops one."""
    claim = {name: EXAMPLE_CLAIM[name] for name, field in Claim.model_fields.items() if field.is_required()}
    claim.update(changes)
    return {k: v for k, v in claim.items() if v is not None}
