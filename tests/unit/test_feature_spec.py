from __future__ import annotations

from pathlib import Path

import pytest

from shared.feature_spec import ColumnKind, ColumnRole, FeatureSpec, claims_spec, load_spec
from shared.schema import Claim


def test_the_claims_spec_has_every_claim_field_with_its_rules() -> None:
    spec = claims_spec()
    assert [c.name for c in spec.columns] == list(Claim.model_fields)
    age = spec.column("customer_age")
    assert (age.kind, age.minimum, age.maximum, age.required) == (ColumnKind.INTEGER, 16, 110, True)
    amount = spec.column("claim_amount")
    assert amount.exclusive_minimum and amount.maximum == 10_000_000
    premium = spec.column("annual_premium")  # constraints inside Optional[Annotated[...]] are kept
    assert premium.minimum == 0 and premium.exclusive_minimum and not premium.required
    assert spec.column("claim_type").allowed == ["auto", "home", "health", "travel", "life", "commercial"]
    assert spec.column("claim_id").pattern is not None
    assert {(r.lower, r.upper) for r in spec.ordering_rules} >= {("incident_date", "report_date")}


def test_protected_attributes_are_never_model_inputs() -> None:
    spec = claims_spec()
    protected = {c.name for c in spec.protected_columns}
    assert protected == {"customer_age", "gender", "location"}
    assert protected.isdisjoint(c.name for c in spec.feature_columns)
    assert all(i not in protected for d in spec.derived for i in d.inputs)


def test_a_spec_round_trips_through_json(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text(claims_spec().to_json())
    assert load_spec(path) == claims_spec()
    assert load_spec("claims") == claims_spec()


def test_a_spec_with_dangling_references_is_refused() -> None:
    data = claims_spec().model_dump()
    data["derived"][0]["inputs"] = ["no_such_column", "sum_insured"]
    with pytest.raises(ValueError, match="no_such_column"):
        FeatureSpec.model_validate(data)
    data = claims_spec().model_dump()
    data["id_column"] = "policy_number"
    with pytest.raises(ValueError, match="id_column"):
        FeatureSpec.model_validate(data)


def test_roles_cover_ids_and_context() -> None:
    spec = claims_spec()
    assert spec.column("claim_id").role == ColumnRole.ID
    assert spec.column("incident_date").role == ColumnRole.CONTEXT


def test_an_overflowing_value_or_ratio_is_encoded_as_missing_not_infinite() -> None:
    import numpy as np

    from shared.ml.features import fit_encoder

    spec = claims_spec()
    base = {"claim_amount": [15000.0], "annual_premium": [1e-300], "sum_insured": [1e300], "vehicle_age": [5]}
    encoder = fit_encoder(spec, base, np.array([0]))
    matrix = encoder.transform(base, 1)
    assert np.isfinite(matrix[~np.isnan(matrix)]).all()
    assert np.isnan(matrix[0, encoder.feature_names.index("sum_insured")])  # beyond float32
