"""The declarative feature spec: which columns a dataset has, what they mean and how they become features.

A spec drives processing (validation and splits), training (encoding), serving (input checks and
readable factor names) and monitoring (baseline statistics). The default spec, :func:`claims_spec`,
is derived from :class:`shared.schema.Claim`, so the schema is defined once. Other datasets bring
their own spec as JSON (see ``--spec``).
"""

from __future__ import annotations

import json
import types
import typing
from datetime import date
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.gates import GateSettings
from shared.schema import NOT_IN_FUTURE, ORDERING_RULES, Claim


class ColumnKind(StrEnum):
    NUMERIC = "numeric"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    CATEGORICAL = "categorical"
    TEXT = "text"
    DATE = "date"
    IDENTIFIER = "identifier"
    ORDINAL = "ordinal"  # ordered bands ("under 25" < "25 to 40" < ...): ``levels`` in order
    MONTH = "month"  # a month: "Jan", "january", "JAN" or 1-12
    WEEKDAY = "weekday"  # a day of the week: "Mon", "monday" or 1-7 (ISO: 1 is Monday)


class ColumnRole(StrEnum):
    FEATURE = "feature"  # a model input
    PROTECTED = "protected"  # fairness reporting only, never a model input
    ID = "id"  # identifies the row; echoed in outputs
    CONTEXT = "context"  # validated and kept, not a model input (dates feeding derived features, ...)
    IGNORE = "ignore"  # dropped after reading (identifiers that must not leak into the model)
    # Leaks the label or is known only after the decision (an investigation's outcome, a payout):
    # validated and kept for analysis, never a model input, never a scoring request's input.
    LEAKAGE = "leakage"


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: ColumnKind
    role: ColumnRole = ColumnRole.FEATURE
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    allowed: list[str] | None = None
    max_length: int | None = None
    pattern: str | None = Field(default=None, description="regular expression the whole value must match")
    date_format: str | None = Field(default=None, description="strptime format; ISO 8601 when absent")
    levels: list[str] | None = Field(
        default=None,
        description="an ordinal column's levels, lowest first; a value must be one of them (case and "
        "spacing aside) and is encoded as its position, 0 for the first",
    )
    missing_tokens: list[str] = Field(
        default_factory=list,
        description="raw values that mean missing in this column, besides the spec's missing_tokens "
        '(an age of "0" meaning unknown); in a numeric column a number token also matches its value written '
        'otherwise ("0" matches 0.0)',
    )

    @model_validator(mode="after")
    def _check_levels(self) -> ColumnSpec:
        if self.kind == ColumnKind.ORDINAL:
            if not self.levels:
                raise ValueError(f"ordinal column {self.name!r} needs its levels, lowest first")
            folded = [" ".join(level.split()).casefold() for level in self.levels]
            if "" in folded or len(set(folded)) != len(folded):
                raise ValueError(f"ordinal column {self.name!r}: levels must be distinct and not empty")
        elif self.levels is not None:
            raise ValueError(f"column {self.name!r}: levels belong to an ordinal column, not a {self.kind}")
        return self


class DerivedFeature(BaseModel):
    """A feature computed from raw columns before encoding.

    ``date_from_parts`` assembles an approximate date from a year, a month (name or number) and
    optionally a week of the month (day ``7 * (week - 1) + 1``, at most the month's last day; day 1
    without one). It is not a model input itself (a date only grows with time): it serves as the
    spec's ``event_date`` and as an input of ``days_between``, ``month`` and ``weekday`` features."""

    model_config = ConfigDict(extra="forbid")

    name: str
    op: Literal["ratio", "days_between", "month", "weekday", "log1p", "date_from_parts"]
    inputs: list[str]
    description: str = ""


# Operations that read dates, which may be assembled ones; and how many inputs each operation takes.
_DATE_OPS: frozenset[str] = frozenset({"days_between", "month", "weekday"})
_ARITY: dict[str, tuple[int, int]] = {
    "ratio": (2, 2),
    "days_between": (2, 2),
    "month": (1, 1),
    "weekday": (1, 1),
    "log1p": (1, 1),
    "date_from_parts": (2, 3),
}


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    positive: list[str] = Field(description="Raw values that mean the positive (high-risk) class.")
    negative: list[str]


class OrderingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lower: str
    upper: str
    message: str


class FeatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    version: str = "1"
    id_column: str
    event_date: str | None = Field(
        default=None,
        description="the time axis that places a claim in time (out-of-time checks): a date column, an "
        "integer or numeric column such as a year, or a date_from_parts derived feature",
    )
    target: TargetSpec
    columns: list[ColumnSpec]
    derived: list[DerivedFeature] = Field(default_factory=list)
    ordering_rules: list[OrderingRule] = Field(default_factory=list)
    not_in_future: list[str] = Field(default_factory=list)
    missing_tokens: list[str] = Field(
        default_factory=lambda: [""], description="Raw strings that mean a missing value."
    )
    text_vocabulary_size: int = Field(default=40, ge=0, le=500)
    max_categories: int = Field(default=30, ge=1, le=500)
    gates: GateSettings | None = Field(
        default=None,
        description="promotion gate settings for this table, by name as --gate takes them (shared/gates.py), "
        'e.g. {"pr_auc_lift": 2.5, "roc_auc": 0.75}; a run\'s --gate settings win',
    )

    @model_validator(mode="after")
    def _check_references(self) -> FeatureSpec:
        names = {c.name for c in self.columns}
        if self.id_column not in names:
            raise ValueError(f"id_column {self.id_column!r} is not among the columns")
        if self.target.column in names:
            raise ValueError("the target column must not be listed among the columns")
        assembled = {d.name for d in self.assembled_dates}
        if self.event_date is not None and self.event_date not in names | assembled:
            raise ValueError(
                f"event_date {self.event_date!r} is neither a column nor a date_from_parts feature"
            )
        if self.event_date in names:
            kind = self.column(self.event_date).kind
            if kind not in (ColumnKind.DATE, ColumnKind.INTEGER, ColumnKind.NUMERIC):
                raise ValueError(
                    f"event_date {self.event_date!r} must be a date or a number (a year), not {kind}"
                )
        clash = sorted(names & {d.name for d in self.derived})
        if clash:
            raise ValueError(f"derived features {clash} have the names of columns")
        for derived in self.derived:
            # An assembled date takes columns only; the date operations may also take assembled dates.
            usable = names | assembled if derived.op in _DATE_OPS else names
            missing = [i for i in derived.inputs if i not in usable]
            if missing:
                raise ValueError(f"derived feature {derived.name!r} uses unknown columns {missing}")
            low, high = _ARITY[derived.op]
            if not low <= len(derived.inputs) <= high:
                wanted = str(low) if low == high else f"{low} to {high}"
                raise ValueError(
                    f"derived feature {derived.name!r} ({derived.op}) takes {wanted} inputs, "
                    f"not {len(derived.inputs)}"
                )
        for rule in self.ordering_rules:
            for ref in (rule.lower, rule.upper):
                if ref not in names:
                    raise ValueError(f"ordering rule uses unknown column {ref!r}")
        return self

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def by_role(self, role: ColumnRole) -> list[ColumnSpec]:
        return [c for c in self.columns if c.role == role]

    @property
    def feature_columns(self) -> list[ColumnSpec]:
        return self.by_role(ColumnRole.FEATURE)

    @property
    def protected_columns(self) -> list[ColumnSpec]:
        return self.by_role(ColumnRole.PROTECTED)

    @property
    def kept_columns(self) -> list[ColumnSpec]:
        return [c for c in self.columns if c.role != ColumnRole.IGNORE]

    @property
    def leakage_columns(self) -> list[ColumnSpec]:
        """Columns that leak the label or are known only after the decision: kept in validated data
        for analysis, but never model inputs, never accepted in a scoring request, never captured."""
        return self.by_role(ColumnRole.LEAKAGE)

    @property
    def request_columns(self) -> list[str]:
        """The fields a scoring request may carry: the kept columns but those that leak the label
        (the target is never among the columns)."""
        return [c.name for c in self.columns if c.role not in (ColumnRole.IGNORE, ColumnRole.LEAKAGE)]

    @property
    def assembled_dates(self) -> list[DerivedFeature]:
        """The ``date_from_parts`` features: dates built from year, month and week columns."""
        return [d for d in self.derived if d.op == "date_from_parts"]

    @property
    def model_derived(self) -> list[DerivedFeature]:
        """The derived features that are model inputs (every one but the assembled dates)."""
        return [d for d in self.derived if d.op != "date_from_parts"]

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_file(cls, path: str | Path) -> FeatureSpec:
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------
# The default spec, derived from the Claim model.

TARGET_COLUMN = "is_high_risk"

# Which Claim fields are model inputs is a modelling decision, so it is stated here; the types,
# bounds and allowed values come from the Claim model itself.
_CLAIM_ROLES: dict[str, ColumnRole] = {
    "claim_id": ColumnRole.ID,
    # Age band, gender and location are the groups of the fairness report: never model inputs.
    "customer_age": ColumnRole.PROTECTED,
    "gender": ColumnRole.PROTECTED,
    "location": ColumnRole.PROTECTED,
    "policy_start_date": ColumnRole.CONTEXT,
    "incident_date": ColumnRole.CONTEXT,
    "report_date": ColumnRole.CONTEXT,
}

_CLAIM_DERIVED: list[DerivedFeature] = [
    DerivedFeature(
        name="amount_to_sum_insured",
        op="ratio",
        inputs=["claim_amount", "sum_insured"],
        description="claim amount as a share of the sum insured",
    ),
    DerivedFeature(
        name="amount_to_premium",
        op="ratio",
        inputs=["claim_amount", "annual_premium"],
        description="claim amount in years of premium",
    ),
    DerivedFeature(
        name="days_policy_start_to_incident",
        op="days_between",
        inputs=["policy_start_date", "incident_date"],
        description="days from policy start to the incident",
    ),
    DerivedFeature(
        name="days_incident_to_report",
        op="days_between",
        inputs=["incident_date", "report_date"],
        description="days from the incident to its report",
    ),
    DerivedFeature(
        name="incident_month", op="month", inputs=["incident_date"], description="month of the incident"
    ),
]


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _column_from_field(name: str, field: Any) -> ColumnSpec:
    annotation, _ = _unwrap_optional(field.annotation)
    metadata = list(field.metadata)
    if typing.get_origin(annotation) is typing.Annotated:
        # Optional[Annotated[...]] keeps its constraints inside the annotation, not on the field.
        annotation, *extras = typing.get_args(annotation)
        for extra in extras:
            metadata.extend(getattr(extra, "metadata", [extra]))
    kind: ColumnKind
    allowed: list[str] | None = None
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        kind, allowed = ColumnKind.CATEGORICAL, [str(m.value) for m in annotation]
    elif annotation is bool:
        kind = ColumnKind.BOOLEAN
    elif annotation is int:
        kind = ColumnKind.INTEGER
    elif annotation is float:
        kind = ColumnKind.NUMERIC
    elif annotation is date:
        kind = ColumnKind.DATE
    elif annotation is str:
        kind = ColumnKind.TEXT if name == "description" else ColumnKind.CATEGORICAL
    else:  # pragma: no cover - guards future schema edits
        raise TypeError(f"no column kind for Claim.{name}: {annotation!r}")
    role = _CLAIM_ROLES.get(name, ColumnRole.FEATURE)
    if role == ColumnRole.ID:
        kind = ColumnKind.IDENTIFIER
    spec: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "role": role,
        "required": field.is_required(),
        "allowed": allowed,
    }
    for meta in metadata:
        if isinstance(meta, annotated_types.Gt):
            spec["minimum"], spec["exclusive_minimum"] = float(meta.gt), True  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Ge):
            spec["minimum"] = float(meta.ge)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.Le):
            spec["maximum"] = float(meta.le)  # type: ignore[arg-type]
        elif isinstance(meta, annotated_types.MaxLen):
            spec["max_length"] = meta.max_length
        elif getattr(meta, "pattern", None):
            spec["pattern"] = meta.pattern
    return ColumnSpec(**spec)


def claims_spec() -> FeatureSpec:
    """The default spec: the Claim model's fields plus the engineered features."""
    columns = [_column_from_field(name, field) for name, field in Claim.model_fields.items()]
    return FeatureSpec(
        name="claims",
        id_column="claim_id",
        event_date="incident_date",
        target=TargetSpec(
            column=TARGET_COLUMN,
            positive=["1", "1.0", "true", "True"],
            negative=["0", "0.0", "false", "False"],
        ),
        columns=columns,
        derived=list(_CLAIM_DERIVED),
        ordering_rules=[OrderingRule(lower=lo, upper=hi, message=msg) for lo, hi, msg in ORDERING_RULES],
        not_in_future=list(NOT_IN_FUTURE),
    )


SPECS_DIR = Path(__file__).resolve().parent / "specs"


def builtin_spec_names() -> list[str]:
    return ["claims", *sorted(p.stem for p in SPECS_DIR.glob("*.json"))]


def load_spec(name_or_path: str | Path) -> FeatureSpec:
    """A built-in spec by name (``claims``, or a file in ``shared/specs/``), or a spec JSON file by path."""
    if str(name_or_path) == "claims":
        return claims_spec()
    shipped = SPECS_DIR / f"{name_or_path}.json"
    if shipped.is_file():
        return FeatureSpec.from_file(shipped)
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"no spec {str(name_or_path)!r}: use a file path or one of {builtin_spec_names()}")
    return FeatureSpec.from_file(path)
