"""The claims lake: what the system saw, as tables, one definition for both engines.

Every table is Parquet under ``<root>/<table>/<key>=<value>/…`` (Hive partitions). In AWS the root
is an S3 prefix, the Glue catalog holds the tables and Athena answers (awswrangler); offline it is
``<home>/lake`` and DuckDB answers. The queries are written once, in Athena's dialect (Trino):
:mod:`shared.adapters.lake` transpiles them for DuckDB with sqlglot, and the tests check that every
function they call is one Trino knows.

Writers replace their own partition (a validate run, a dropped file, a capture hour, a labels file,
a monitoring run), so running a step twice leaves one copy of its rows.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

ColumnType = Literal["string", "bigint", "double", "boolean", "timestamp"]
_NAME: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# Partition values become folder names and S3 keys: no separators, no dot-dot, nothing to quote.
_PARTITION_VALUE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


# How far back the evaluation replays live traffic by default (a pipeline input).
DEFAULT_REPLAY_DAYS: Final = 7


class LakeError(RuntimeError):
    """The lake could not be read or written; the message says which table and why."""


@dataclass(frozen=True)
class LakeTable:
    """A table: its columns (empty for a table whose columns follow its writer, like the training
    claims of a spec) and its partition keys, which are always strings."""

    name: str
    columns: tuple[tuple[str, ColumnType], ...]
    partition: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        for name in (self.name, *(c for c, _ in self.columns), *self.partition):
            if not _NAME.match(name):
                raise ValueError(f"{name!r} is not a lake name (lower case, digits, underscores)")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    def partition_path(self, values: Mapping[str, str]) -> str:
        """``key=value/…`` for this table's keys, each value checked."""
        if set(values) != set(self.partition):
            raise LakeError(f"{self.name} is partitioned by {list(self.partition)}, not {sorted(values)}")
        parts = []
        for key in self.partition:
            value = str(values[key])
            if not _PARTITION_VALUE.match(value) or ".." in value:
                raise LakeError(f"{self.name}: {key}={value!r} is not a partition value")
            parts.append(f"{key}={value}")
        return "/".join(parts)


INFERENCES: Final = LakeTable(
    "inferences",
    (
        ("event_id", "string"),  # the capture's eventId: one request
        ("inference_time", "timestamp"),  # UTC
        ("position", "bigint"),  # the claim's place in its request
        ("claim_id", "string"),
        ("risk_level", "string"),
        ("risk_score", "double"),
        ("confidence", "double"),
        ("model_version", "string"),
        ("endpoint", "string"),
        ("claim", "string"),  # the claim as captured (personal fields dropped or pseudonymized), JSON
    ),
    ("dt", "hour"),
    "Captured inferences, one row per claim, flattened from the endpoint's data capture.",
)
BATCH_SCORED: Final = LakeTable(
    "batch_scored",
    (
        ("source_file", "string"),
        ("row_number", "bigint"),
        ("claim_id", "string"),
        ("risk_level", "string"),
        ("risk_score", "double"),
        ("confidence", "double"),
        ("model_version", "string"),
        ("risk_factors", "string"),  # JSON
        ("scored_at", "timestamp"),
    ),
    ("batch_id",),
    "Claims scored in batch (the drop folder, batch transform), one row per claim.",
)
REJECTED_ROWS: Final = LakeTable(
    "rejected_rows",
    (
        ("source_file", "string"),
        ("row_number", "bigint"),
        ("claim_id", "string"),
        ("reason", "string"),
        ("raw", "string"),
        ("rejected_at", "timestamp"),
    ),
    ("stage", "batch_id"),
    "Rows refused with their reasons: by batch scoring (stage=batch) and by validation (stage=training).",
)
OUTCOMES: Final = LakeTable(
    "outcomes",
    (
        ("claim_id", "string"),
        ("outcome", "boolean"),  # turned out high risk
        ("source_file", "string"),
        ("loaded_at", "timestamp"),
    ),
    ("load_id",),
    "Ground truth that arrived later: one row per claim and labels file.",
)
MONITORING_METRICS: Final = LakeTable(
    "monitoring_metrics",
    (
        ("metric", "string"),
        ("feature", "string"),  # empty for a metric of the whole window
        ("value", "double"),
        ("threshold", "double"),
        ("violated", "boolean"),
        ("window_start", "timestamp"),
        ("window_end", "timestamp"),
        ("model_version", "string"),
        ("computed_at", "timestamp"),
    ),
    ("kind", "run_id"),
    "Drift (kind=drift) and model-quality (kind=quality) figures, one row per metric and run.",
)
TABLES: Final = {t.name: t for t in (INFERENCES, BATCH_SCORED, REJECTED_ROWS, OUTCOMES, MONITORING_METRICS)}
TRAINING_PARTITION: Final = ("run_id",)


def training_table(spec_name: str) -> LakeTable:
    """The validated training claims of one spec: its own columns (and ``split``), one partition per
    pipeline run. ``training_claims`` for the built-in spec, ``training_<spec>`` for another."""
    name = "training_claims" if spec_name == "claims" else f"training_{spec_name}"
    name = re.sub(r"[^a-z0-9_]", "_", name.lower())
    return LakeTable(name, (), TRAINING_PARTITION, f"Validated training claims of the {spec_name} spec.")


def table_named(name: str) -> LakeTable:
    """A fixed table, or a spec's training table (its columns come from the data)."""
    if name in TABLES:
        return TABLES[name]
    if name.startswith("training_"):
        return LakeTable(name, (), TRAINING_PARTITION, "Validated training claims.")
    raise LakeError(f"no lake table {name!r}; the lake has {sorted(TABLES)} and training_<spec>")


def lake_column(name: str) -> str:
    """A column's name in the lake: what Glue and Athena keep of it (accents stripped, every run of
    other characters an underscore, lower case), the rule awswrangler applies when it registers a table."""
    plain = "".join(c for c in unicodedata.normalize("NFD", name) if unicodedata.category(c) != "Mn")
    return re.sub(r"[^A-Za-z0-9_]+", "_", plain).lower()


def restore_columns(columns: Sequence[str], wanted: Sequence[str]) -> dict[str, str]:
    """Renames that give a lake table's columns back the names a spec expects (``capital_gains`` is
    the lake's ``capital-gains``)."""
    by_lake_name = {lake_column(w): w for w in wanted}
    return {c: by_lake_name[c] for c in columns if c not in wanted and c in by_lake_name}


def now_utc() -> datetime:
    """A timestamp as the lake stores it: UTC, naive, microseconds."""
    return datetime.now(UTC).replace(tzinfo=None)


def sql_text(value: str) -> str:
    """A string literal (both engines double a quote inside one)."""
    return "'" + value.replace("'", "''") + "'"


def sql_timestamp(moment: datetime) -> str:
    naive = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    return f"TIMESTAMP '{naive.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}'"


# ---------------------------------------------------------------------------------------------
# The queries the system runs, in Athena's dialect. Literals come from sql_text / sql_timestamp.

# Each labelled claim once, with its latest prediction (from the endpoint's capture or a scored
# batch file, whichever is newer) and its latest known outcome.
LABELLED_PREDICTIONS: Final = """
WITH predictions AS (
    SELECT claim_id, inference_time, event_id AS answer_id, risk_level, risk_score, model_version
    FROM inferences
    WHERE claim_id IS NOT NULL AND claim_id <> ''
    UNION ALL
    SELECT claim_id, scored_at AS inference_time, batch_id || '#' || CAST(row_number AS VARCHAR) AS answer_id,
           risk_level, risk_score, model_version
    FROM batch_scored
    WHERE claim_id IS NOT NULL AND claim_id <> ''
),
latest_prediction AS (
    SELECT claim_id, inference_time, risk_level, risk_score, model_version,
           row_number() OVER (PARTITION BY claim_id ORDER BY inference_time DESC, answer_id DESC) AS newest
    FROM predictions
),
latest_outcome AS (
    SELECT claim_id, outcome,
           row_number() OVER (PARTITION BY claim_id ORDER BY loaded_at DESC, load_id DESC) AS newest
    FROM outcomes
)
SELECT p.claim_id, p.inference_time, p.risk_level = 'high' AS predicted_high, p.risk_score, o.outcome,
       p.model_version
FROM latest_prediction p
JOIN latest_outcome o ON o.claim_id = p.claim_id AND o.newest = 1
WHERE p.newest = 1
"""


def quality_by_bucket(bucket: Literal["day", "week"]) -> str:
    """The confusion matrix per day or week (weeks start on Monday in both engines), and the model
    versions that answered, from :data:`LABELLED_PREDICTIONS`."""
    return f"""
WITH labelled AS ({LABELLED_PREDICTIONS})
SELECT CAST(date_trunc('{bucket}', inference_time) AS DATE) AS bucket_start,
       count(*) AS labelled,
       count_if(outcome) AS positives,
       count_if(predicted_high) AS flagged,
       count_if(predicted_high AND outcome) AS tp,
       count_if(predicted_high AND NOT outcome) AS fp,
       count_if(NOT predicted_high AND outcome) AS fn,
       count_if(NOT predicted_high AND NOT outcome) AS tn,
       count(DISTINCT model_version) AS versions
FROM labelled
GROUP BY 1
ORDER BY 1
"""


def model_versions_by_bucket(bucket: Literal["day", "week"]) -> str:
    return f"""
WITH labelled AS ({LABELLED_PREDICTIONS})
SELECT DISTINCT CAST(date_trunc('{bucket}', inference_time) AS DATE) AS bucket_start, model_version
FROM labelled
ORDER BY 1, 2
"""


LABELS_WITHOUT_PREDICTION: Final = """
SELECT count(DISTINCT o.claim_id) AS claims
FROM outcomes o
WHERE NOT EXISTS (SELECT 1 FROM inferences i WHERE i.claim_id = o.claim_id)
  AND NOT EXISTS (SELECT 1 FROM batch_scored b WHERE b.claim_id = o.claim_id)
"""


def inferences_in_window(start: datetime | None, end: datetime | None) -> str:
    """Captured claims and scores with ``start <= inference_time < end``; the date partitions prune
    what is read."""
    conditions = []
    if start is not None:
        conditions += [f"dt >= {sql_text(start.astimezone(UTC).strftime('%Y-%m-%d'))}"]
        conditions += [f"inference_time >= {sql_timestamp(start)}"]
    if end is not None:
        conditions += [f"dt <= {sql_text(end.astimezone(UTC).strftime('%Y-%m-%d'))}"]
        conditions += [f"inference_time < {sql_timestamp(end)}"]
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT claim, risk_score FROM inferences {where}"


def decisions_in_window(start: datetime, end: datetime) -> str:
    """The captured claims of a window with the decision they got, for replaying them."""
    return (
        "SELECT event_id, position, claim_id, claim, risk_level, risk_score, model_version FROM inferences "
        f"WHERE dt >= {sql_text(start.astimezone(UTC).strftime('%Y-%m-%d'))} "
        f"AND inference_time >= {sql_timestamp(start)} AND inference_time < {sql_timestamp(end)} "
        "ORDER BY inference_time, event_id, position"
    )


def named_queries() -> dict[str, str]:
    """Every query the system runs, for the tests that check them on both engines."""
    moment = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    queries = {
        "labelled_predictions": LABELLED_PREDICTIONS,
        "labels_without_prediction": LABELS_WITHOUT_PREDICTION,
        "inferences_in_window": inferences_in_window(moment.replace(day=1), moment),
        "inferences_all": inferences_in_window(None, None),
        "decisions_in_window": decisions_in_window(moment.replace(day=1), moment),
    }
    for bucket in ("day", "week"):
        queries[f"quality_by_{bucket}"] = quality_by_bucket(bucket)
        queries[f"model_versions_by_{bucket}"] = model_versions_by_bucket(bucket)
    return queries


def select_only(sql: str) -> str:
    """The statement when it only reads; a :class:`LakeError` when it would change anything or is
    more than one statement. Checked by parsing (Athena's dialect), not by looking at words."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(sql, read="trino") if s is not None]
    except sqlglot.errors.ParseError as error:
        raise LakeError(f"not a query Athena would read: {error}") from None
    if len(statements) != 1:
        raise LakeError(f"one statement at a time, not {len(statements)}")
    (statement,) = statements
    reads = (exp.Select, exp.Union, exp.Intersect, exp.Except, exp.Describe, exp.Show)
    if not isinstance(statement, reads):
        raise LakeError(f"the lake answers queries; {statement.key.upper()} would change it")
    writes = (exp.Insert, exp.Create, exp.Delete, exp.Update, exp.Drop, exp.Merge, exp.Copy, exp.Alter)
    if any(isinstance(node, writes) for node in statement.walk()):
        raise LakeError("the lake answers queries; this one would change it")
    return sql


def partition_of_moment(moment: datetime) -> dict[str, str]:
    """The inferences partition of an hour."""
    utc = moment.astimezone(UTC)
    return {"dt": utc.strftime("%Y-%m-%d"), "hour": utc.strftime("%H")}


def quoted_list(values: Sequence[str]) -> str:
    return ", ".join(sql_text(v) for v in values)
