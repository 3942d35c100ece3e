"""The model server holds a real-time request to the API's rules before scoring it.

A batch transform, or anyone allowed to call the endpoint, reaches the model server without the API
in front, so the server validates too (it once scored ``{}`` as high risk and a negative amount as a
claim). The rules are the ones that already exist, not new ones:

- JSON claims for the built-in claims spec: the API's own :class:`shared.schema.Claim` (the spec is
  derived from it), so the endpoint refuses exactly what the API refuses;
- CSV rows (every cell text) and any other spec: :func:`shared.ml.validation.validate_frame`, the
  rules a claims file is held to (for the claims spec, the same rules again, by construction).

A request with an invalid claim is refused whole (4xx naming the claim and field), as the API's batch
is: nothing is scored half-way. Valid claims go on in the form the validation produced.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from pydantic import TypeAdapter, ValidationError

from shared.feature_spec import FeatureSpec, claims_spec
from shared.payloads import PayloadError
from shared.schema import Claim

MAX_REASONS: Final = 5  # in one error message; the first are what a client needs to fix


class InvalidClaims(PayloadError):
    """At least one claim breaks the rules; the message names each (the first few) and its field."""


@functools.cache
def _claims_adapter() -> TypeAdapter[list[Claim]]:
    return TypeAdapter(list[Claim])


@functools.cache
def _claim_columns() -> tuple[Any, ...]:
    return tuple(claims_spec().columns)


# The last spec asked about (and its column list) with the answer: comparing the columns field by
# field took about 20 µs on every request, while a server asks about its one model's spec.
_last_answer: tuple[FeatureSpec, list[Any], bool] | None = None


def is_claims_spec(spec: FeatureSpec) -> bool:
    global _last_answer  # noqa: PLW0603 - a one-entry cache, replaced whole (atomic under threads)
    last = _last_answer
    if last is not None and last[0] is spec and last[1] is spec.columns:
        return last[2]
    answer = tuple(spec.columns) == _claim_columns()
    _last_answer = (spec, spec.columns, answer)
    return answer


def validated_records(
    records: Sequence[dict[str, Any]], spec: FeatureSpec, *, as_text: bool
) -> list[dict[str, Any]]:
    """The records if every one is valid (JSON values through the API's model, normalised as the API
    sends them on); raises :class:`InvalidClaims` otherwise. ``as_text``: every value is text (CSV)."""
    if not as_text and is_claims_spec(spec):
        try:
            claims = _claims_adapter().validate_python(records)
        except ValidationError as error:
            raise InvalidClaims(_describe_pydantic(error, len(records))) from None
        return [c.model_dump(mode="json", exclude_none=True) for c in claims]
    return _validated_by_spec(records, spec)


def _describe_pydantic(error: ValidationError, count: int) -> str:
    reasons = []
    for problem in error.errors()[:MAX_REASONS]:
        location = list(problem["loc"])
        where = f"claim {int(location.pop(0)) + 1}" if count > 1 and location else "the claim"
        field = ".".join(str(part) for part in location) or "claim"
        reasons.append(f"{where}: {field}: {problem['msg']}")
    more = error.error_count() - len(reasons)
    return "invalid claims: " + "; ".join(reasons) + (f"; and {more} more" if more > 0 else "")


def _validated_by_spec(records: Sequence[dict[str, Any]], spec: FeatureSpec) -> list[dict[str, Any]]:
    import pandas as pd

    from shared.ml.validation import REASON, ROW_NUMBER, validate_frame

    nested = next(
        ((i, k) for i, r in enumerate(records, 1) for k, v in r.items() if isinstance(v, dict | list)), None
    )
    if nested is not None:
        raise InvalidClaims(f"invalid claims: claim {nested[0]}: {nested[1]}: a value, not an object or list")
    result = validate_frame(pd.DataFrame.from_records(list(records)), spec, require_target=False)
    if len(result.rejected):
        rows = result.rejected[[ROW_NUMBER, REASON]].head(MAX_REASONS).itertuples(index=False)
        reasons = [f"claim {number}: {reason}" for number, reason in rows]
        more = len(result.rejected) - len(reasons)
        suffix = f"; and {more} more" if more > 0 else ""
        raise InvalidClaims("invalid claims: " + "; ".join(reasons) + suffix)
    return list(records)
