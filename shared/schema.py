"""The claim schema: the one definition of what a claim is and which business rules it obeys.

The API validates requests with :class:`Claim`; the processing job and the batch path validate whole
files with rules derived from this same model (see :mod:`shared.feature_spec`). Nothing here imports
numpy or pandas, so the API Lambda can use it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# Numbers are strict: "15000" or true where a number belongs is rejected rather than coerced,
# so a client's type bug surfaces as a 422 instead of a silently different score.
Amount = Annotated[float, Field(strict=True, gt=0, le=10_000_000)]
NonNegativeAmount = Annotated[float, Field(strict=True, ge=0, le=100_000_000)]


class ClaimType(StrEnum):
    AUTO = "auto"
    HOME = "home"
    HEALTH = "health"
    TRAVEL = "travel"
    LIFE = "life"
    COMMERCIAL = "commercial"


class Location(StrEnum):
    URBAN = "urban"
    SUBURBAN = "suburban"
    RURAL = "rural"


class Gender(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNDISCLOSED = "undisclosed"


class RiskLevel(StrEnum):
    LOW = "low"
    HIGH = "high"


# Cross-field rules, as data so that the file validator applies exactly the same ones.
# Each pair (lower, upper) means: when both are present, lower <= upper.
ORDERING_RULES: Final[tuple[tuple[str, str, str], ...]] = (
    ("policy_start_date", "incident_date", "the incident cannot precede the policy start"),
    ("incident_date", "report_date", "the claim cannot be reported before the incident"),
    ("deductible", "sum_insured", "the deductible cannot exceed the sum insured"),
    ("policy_tenure", "customer_age", "the policy tenure cannot exceed the customer's age"),
)
# Dates that cannot lie in the future (one day of slack for time zones).
NOT_IN_FUTURE: Final[tuple[str, ...]] = ("policy_start_date", "incident_date", "report_date")
FUTURE_SLACK: Final = dt.timedelta(days=1)


# A complete example claim: shown in the OpenAPI document and in the curl that `make run` prints.
EXAMPLE_CLAIM: Final[dict[str, Any]] = {
    "claim_id": "CLM-2024-001",
    "claim_amount": 15000,
    "claim_type": "auto",
    "customer_age": 35,
    "policy_tenure": 2,
    "claim_history": 1,
    "location": "urban",
    "vehicle_age": 5,
    "incident_date": "2024-01-10",
    "report_date": "2024-01-12",
    "sum_insured": 25000,
    "description": "rear ended in traffic",
}


class Claim(BaseModel):
    """One insurance claim as the API, the endpoint and the batch files receive it."""

    model_config = ConfigDict(
        extra="ignore",
        str_strip_whitespace=True,
        use_enum_values=True,
        json_schema_extra={"examples": [EXAMPLE_CLAIM]},
    )

    claim_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$", examples=["CLM-2024-001"]
    )
    claim_amount: Amount = Field(description="Amount claimed, in the policy currency.", examples=[15000])
    claim_type: ClaimType = Field(examples=["auto"])
    customer_age: int = Field(
        strict=True, ge=16, le=110, description="Age of the policyholder in years.", examples=[35]
    )
    policy_tenure: float = Field(
        strict=True, ge=0, le=90, description="Years the policy has been held.", examples=[2]
    )
    claim_history: int = Field(
        strict=True, ge=0, le=100, description="Number of earlier claims on this policy.", examples=[1]
    )
    location: Location = Field(examples=["urban"])
    vehicle_age: int | None = Field(default=None, strict=True, ge=0, le=80, examples=[5])
    policy_start_date: dt.date | None = Field(default=None, examples=["2022-03-01"])
    incident_date: dt.date | None = Field(default=None, examples=["2024-01-10"])
    report_date: dt.date | None = Field(default=None, examples=["2024-01-12"])
    annual_premium: Amount | None = Field(default=None, description="Annual premium of the policy.")
    sum_insured: Amount | None = Field(default=None, description="Maximum payable under the policy.")
    deductible: NonNegativeAmount | None = Field(default=None)
    region: str | None = Field(
        default=None, min_length=1, max_length=40, pattern=r"^[a-z0-9_-]+$", examples=["north"]
    )
    police_report: bool | None = Field(default=None, strict=True)
    witnesses: int | None = Field(default=None, strict=True, ge=0, le=50)
    description: str | None = Field(default=None, max_length=4000, description="Free-text account.")
    gender: Gender | None = Field(
        default=None, description="Used only for the fairness report; never a model input."
    )

    @field_validator("*", mode="after")
    @classmethod
    def _business_rules(cls, value: Any, info: ValidationInfo) -> Any:
        # Runs per field, so an error's location names the field that breaks the rule: whichever of
        # a pair comes later in the model is checked against the earlier, already validated one.
        if value is None:
            return value
        name = info.field_name
        for lower, upper, message in ORDERING_RULES:
            if name == upper and info.data.get(lower) is not None and info.data[lower] > value:
                raise ValueError(f"{upper} must not be less than {lower}: {message}")
            if name == lower and info.data.get(upper) is not None and value > info.data[upper]:
                raise ValueError(f"{lower} must not exceed {upper}: {message}")
        if name in NOT_IN_FUTURE and value > dt.datetime.now(dt.UTC).date() + FUTURE_SLACK:
            raise ValueError(f"{name} lies in the future")
        return value


class RiskFactor(BaseModel):
    factor: str = Field(description="Readable snake_case name of the feature behind the contribution.")
    importance: float = Field(
        ge=0, le=1, description="Share of this claim's total absolute contribution that the factor carries."
    )
    direction: Literal["increases_risk", "decreases_risk"]
    contribution: float = Field(description="Signed contribution to the model's log-odds.")
    value: float | bool | str | None = Field(
        default=None,
        description="The claim's own value for the factor (a number, a category, whether the "
        "description mentions the word); null when the claim did not provide it, and the "
        "contribution is then the model's reading of the absence.",
    )


class EndpointPrediction(BaseModel):
    """What the model endpoint returns for one claim."""

    claim_id: str
    risk_level: RiskLevel
    risk_score: float = Field(ge=0, le=1, description="Estimated probability that the claim is high risk.")
    confidence: float = Field(
        ge=0, le=1, description="Estimated probability that the assigned risk level is the correct one."
    )
    risk_factors: list[RiskFactor]
    model_version: str
    threshold: float = Field(ge=0, le=1, description="Score at or above which a claim is high risk.")


class PredictionResponse(EndpointPrediction):
    """The API's answer for one claim."""

    processing_time_ms: float = Field(ge=0)
    timestamp: dt.datetime


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str
    timestamp: dt.datetime
    dependencies: dict[str, str] = Field(default_factory=dict)


MAX_BATCH_CLAIMS: Final = 1000


class BatchRequest(BaseModel):
    """Up to 1000 claims scored together. One invalid claim rejects the whole batch (422, with each
    bad claim's position and field), so a batch is either scored whole or not at all."""

    model_config = ConfigDict(extra="forbid")

    claims: list[Claim] = Field(min_length=1, max_length=MAX_BATCH_CLAIMS)


def repeated_claim_ids(claim_ids: Sequence[str | None]) -> dict[int, int]:
    """The duplicate-id rule, one for the batch API and for claims files (the drop folder, a batch
    transform, the validate job): an id seen earlier is a duplicate of its first occurrence, which
    alone counts. Maps each repeat's position (0-based) to its first occurrence's."""
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for position, claim_id in enumerate(claim_ids):
        if claim_id is None:
            continue
        if claim_id in first:
            repeats[position] = first[claim_id]
        else:
            first[claim_id] = position
    return repeats


class BatchResponse(BaseModel):
    predictions: list[PredictionResponse]
    count: int = Field(ge=1)
    high_risk_count: int = Field(ge=0)
    model_version: str
    processing_time_ms: float = Field(ge=0)


class ModelCard(BaseModel):
    """The model now serving: what it is, how good it is and where it came from."""

    model_version: str
    family: str
    created_at: str
    threshold: float = Field(ge=0, le=1)
    costs: dict[str, float] = Field(description="Relative costs that set the threshold.")
    metrics: dict[str, dict[str, Any]] = Field(description="Metrics per split (validation, test).")
    explanation_method: str
    lineage: dict[str, Any] = Field(description="Data hash, code version, hyperparameters, row counts.")

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> ModelCard:
        """The card from a model artifact's ``manifest.json`` (no numpy needed to read it)."""
        return cls(
            model_version=manifest["model_version"],
            family=manifest["family"],
            created_at=manifest["created_at"],
            threshold=manifest["threshold"],
            costs=manifest["costs"],
            metrics={k: v for k, v in manifest["metrics"].items() if isinstance(v, dict)},
            explanation_method=manifest.get("explanation_method", ""),
            lineage=manifest["lineage"],
        )


class RetrainRequest(BaseModel):
    """Optional settings of the retraining run; an empty body runs the pipeline's defaults."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500, description="Why: kept with the execution.")
    tuning_trials: int | None = Field(default=None, ge=0, le=500)
    cv_folds: int | None = Field(default=None, ge=0, le=10)


class RetrainResponse(BaseModel):
    execution_id: str
    status: Literal["started"]
    started_at: dt.datetime


def claim_field_names() -> list[str]:
    return list(Claim.model_fields)


def parse_claim(data: dict[str, Any]) -> Claim:
    return Claim.model_validate(data)
