"""Validation in bounded memory: rows stream through the validator chunk by chunk into staging
Parquet files; DuckDB (which spills to disk) finds repeated claim ids and, per class, the cut-offs of
the stratified split; the splits are then written by streaming the staged rows again.

Only counts stay in memory, so a file of 16 million claims needs about as much memory as one of a
million. The split is reproducible: within each class, rows are ordered by an MD5 of the seed and
the claim id (the row's position when it has none), and the first shares go to test and validation.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shared.batch_jobs import columns_mismatch
from shared.csv_safety import inert_cell
from shared.feature_spec import FeatureSpec
from shared.ml.validation import REASON, ROW_NUMBER, ValidationResult, validate_frame
from shared.parquet_batches import parquet_batches

CHUNK_ROWS: Final = 200_000
SOURCE_FILE: Final = "source_file"
ORDER: Final = "_order"  # the row's place among all accepted rows, for the second pass
SPLITS: Final = ("train", "validation", "test")
DUCKDB_MEMORY: Final = "160MB"  # the engine's own budget; beyond it, it spills to the scratch folder
DUPLICATE: Final = "duplicate"


@dataclass
class StagedValidation:
    """What the first pass leaves: staged rows and the counts the quality report needs."""

    scratch: Path
    accepted_file: Path
    rejected_files: list[Path] = field(default_factory=list)
    summaries: list[ValidationResult] = field(default_factory=list)
    accepted_rows: int = 0
    rejected_rows: int = 0
    class_counts: Counter[int] = field(default_factory=Counter)


class FileColumnsError(ValueError):
    """A file whose columns do not fit the spec (another spec's file, a CSV without its header); the
    message names the missing and the unexpected columns."""


def check_columns(path: Path, spec: FeatureSpec) -> None:
    """Raise :class:`FileColumnsError` when the file's columns (a CSV's header, a Parquet schema) lack
    a required column or are mostly unknown to the spec, reading nothing but the header or schema.
    JSON Lines name their fields per row: :func:`read_chunks` checks its first chunk's fields."""
    if path.suffix == ".csv":
        header = [
            str(c).strip() for c in pd.read_csv(path, dtype=str, keep_default_na=False, nrows=0).columns
        ]
        what = "header"
    elif path.suffix == ".parquet":
        header, what = pq.ParquetFile(path).schema_arrow.names, "file"
    else:
        return
    mismatch = columns_mismatch(header, spec, what=what)
    if mismatch is None:
        return
    if what == "header" and not {c.name for c in spec.columns} & set(header):
        mismatch += "; a CSV's first line must be its header"
    raise FileColumnsError(f"{path.name}: {mismatch}")


def read_chunks(
    path: Path, chunk_rows: int = CHUNK_ROWS, spec: FeatureSpec | None = None
) -> Iterator[pd.DataFrame]:
    """CSV as text (the validator types it), Parquet by row groups, JSON Lines by lines: a chunk at a time.
    With ``spec``, a file that does not fit it raises :class:`FileColumnsError` before a row is
    validated (:func:`check_columns`; JSON Lines by their first chunk's fields)."""
    if spec is not None:
        check_columns(path, spec)
    if path.suffix == ".csv":
        yield from pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=chunk_rows)
    elif path.suffix == ".parquet":
        for batch in parquet_batches(path, chunk_rows):
            yield batch.to_pandas()
    else:
        for number, chunk in enumerate(pd.read_json(path, lines=True, dtype=False, chunksize=chunk_rows)):
            if number == 0 and spec is not None:
                fields = [str(c) for c in chunk.columns]
                mismatch = columns_mismatch(fields, spec, what="fields of the first lines", lenient=True)
                if mismatch:
                    raise FileColumnsError(f"{path.name}: {mismatch}")
            yield chunk


def _summary(result: ValidationResult) -> ValidationResult:
    """The result without its rows: what the quality report reads."""
    empty = pd.DataFrame()
    return ValidationResult(
        empty, empty, result.rule_counts, result.unknown_columns, result.rows_in, result.present
    )


def _accepted_row_numbers(result: ValidationResult, offset: int) -> np.ndarray:
    rejected = np.zeros(result.rows_in, dtype=bool)
    numbers = result.rejected[ROW_NUMBER].to_numpy(dtype=np.int64) - offset - 1
    rejected[numbers[(numbers >= 0) & (numbers < result.rows_in)]] = True
    return np.flatnonzero(~rejected) + offset + 1


class _Appender:
    """Appends frames to one Parquet file; the first frame fixes the columns and types."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema)
        elif table.schema != self.writer.schema:
            table = table.select(self.writer.schema.names).cast(self.writer.schema)
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def stage(
    files: Sequence[Path], spec: FeatureSpec, scratch: Path, log: Any = print, chunk_rows: int = CHUNK_ROWS
) -> StagedValidation:
    """First pass: every row validated; accepted rows (typed) and rejected ones (as text) staged."""
    scratch.mkdir(parents=True, exist_ok=True)
    staged = StagedValidation(scratch, scratch / "accepted.parquet")
    accepted = _Appender(staged.accepted_file)
    target = spec.target.column
    try:
        for number, path in enumerate(files):
            offset = 0
            rejected = _Appender(scratch / f"rejected-{number}.parquet")
            try:
                for chunk in read_chunks(path, chunk_rows, spec):
                    result = validate_frame(chunk, spec, require_target=True, row_offset=offset)
                    rows = result.accepted
                    rows[ROW_NUMBER] = _accepted_row_numbers(result, offset)
                    rows[SOURCE_FILE] = path.name
                    rows[ORDER] = np.arange(staged.accepted_rows, staged.accepted_rows + len(rows))
                    if len(rows):
                        accepted.write(rows)
                        staged.class_counts.update(rows[target].astype(int).tolist())
                    if len(result.rejected):
                        refused = result.rejected.astype("string")
                        refused[SOURCE_FILE] = path.name
                        rejected.write(refused)
                    staged.accepted_rows += len(rows)
                    staged.rejected_rows += len(result.rejected)
                    staged.summaries.append(_summary(result))
                    offset += len(chunk)
                    log(f"{path.name}: {offset:,} rows read, {staged.rejected_rows:,} rejected so far")
            finally:
                rejected.close()
            if rejected.writer is not None:
                staged.rejected_files.append(rejected.path)
    finally:
        accepted.close()
    return staged


def _connect(scratch: Path) -> Any:
    import duckdb

    connection = duckdb.connect(":memory:")
    connection.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    connection.execute(
        f"SET temp_directory = '{str(scratch / 'duckdb-spill').replace(chr(39), chr(39) * 2)}'"
    )
    connection.execute("SET preserve_insertion_order = true")
    return connection


def _split_key(seed: int, claim_id: Any, position: int) -> str:
    """The split's ordering key of a row: the same MD5 text DuckDB computes in :func:`split_plan`."""
    text = f"{seed}:{claim_id}" if claim_id is not None else f"{seed}:#{position}"
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class SplitPlan:
    """What the second pass needs to place every row, small whatever the data's size: the rows that
    repeat an earlier claim id, and per class the largest key that goes to test and to validation."""

    duplicates: np.ndarray  # staging positions, sorted
    test_upto: dict[int, str | None]
    validation_upto: dict[int, str | None]

    def fates(self, positions: np.ndarray, labels: np.ndarray, keys: Sequence[str]) -> np.ndarray:
        out = np.full(len(positions), "train", dtype=object)
        for i, (label, key) in enumerate(zip(labels.tolist(), keys, strict=True)):
            test, validation = self.test_upto.get(label), self.validation_upto.get(label)
            if test is not None and key <= test:
                out[i] = "test"
            elif validation is not None and key <= validation:
                out[i] = "validation"
        out[np.isin(positions, self.duplicates)] = DUPLICATE
        return out


def split_plan(
    staged: StagedValidation, spec: FeatureSpec, validation: float, test: float, seed: int
) -> SplitPlan:
    """DuckDB (memory-limited, spilling to disk) finds the repeated ids and, within each class, the
    key below which the first shares go to test and validation; only those few numbers come back."""
    source = str(staged.accepted_file).replace("'", "''")
    identifier, target = spec.id_column, spec.target.column
    ranked = f"""
    WITH rows AS (
        SELECT "{ORDER}" AS position, "{identifier}" AS id, "{target}" AS y FROM read_parquet('{source}')
    ),
    ranked AS (
        SELECT position, y,
               md5('{seed}:' || coalesce(CAST(id AS VARCHAR), '#' || CAST(position AS VARCHAR))) AS k,
               CASE WHEN id IS NULL THEN 1
                    ELSE row_number() OVER (PARTITION BY id ORDER BY position) END AS nth
        FROM rows
    )"""
    connection = _connect(staged.scratch)
    try:
        duplicates = connection.execute(
            f"{ranked} SELECT position FROM ranked WHERE nth > 1 ORDER BY position"
        ).fetchnumpy()["position"]
        cutoffs = connection.execute(
            f"""{ranked},
            placed AS (
                SELECT y, k, row_number() OVER (PARTITION BY y ORDER BY k) - 1 AS place,
                       count(*) OVER (PARTITION BY y) AS members
                FROM ranked WHERE nth = 1
            )
            SELECT y,
                   max(k) FILTER (WHERE place < round(members * {test})) AS test_upto,
                   max(k) FILTER (WHERE place < round(members * {test}) + round(members * {validation}))
                       AS validation_upto
            FROM placed GROUP BY y"""
        ).fetchall()
    finally:
        connection.close()
    return SplitPlan(
        np.asarray(duplicates, dtype=np.int64),
        {int(y): t for y, t, _ in cutoffs},
        {int(y): v for y, _, v in cutoffs},
    )


@dataclass
class SplitCounts:
    rows: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0


def write_splits(
    staged: StagedValidation,
    spec: FeatureSpec,
    out: Path,
    *,
    validation: float,
    test: float,
    seed: int,
    duplicates_file: Path,
) -> SplitCounts:
    """Second pass: each staged row to its split's Parquet file (without the bookkeeping columns),
    rows repeating an earlier claim id to ``duplicates_file`` with their reason."""
    counts = SplitCounts()
    writers = {name: _Appender(out / name / f"{name}.parquet") for name in SPLITS}
    for name in SPLITS:
        (out / name).mkdir(parents=True, exist_ok=True)
    repeated = _Appender(duplicates_file)
    plan = split_plan(staged, spec, validation, test, seed)
    try:
        for batch in parquet_batches(staged.accepted_file, CHUNK_ROWS):
            frame = batch.to_pandas()
            positions = frame[ORDER].to_numpy(dtype=np.int64)
            ids = frame[spec.id_column].astype(object).where(frame[spec.id_column].notna(), None).tolist()
            keys = [_split_key(seed, i, p) for i, p in zip(ids, positions.tolist(), strict=True)]
            fate = plan.fates(positions, frame[spec.target.column].astype(int).to_numpy(), keys)
            for name in SPLITS:
                chosen = frame[fate == name]
                if len(chosen):
                    writers[name].write(chosen.drop(columns=[ORDER, ROW_NUMBER, SOURCE_FILE]))
                    counts.rows[name] += len(chosen)
            dupes = frame[fate == DUPLICATE]
            if len(dupes):
                moved = dupes.drop(columns=[ORDER]).astype("string")
                moved[REASON] = spec.id_column + ": duplicate of an earlier row"
                repeated.write(moved)
                counts.duplicates += len(dupes)
    finally:
        for writer in (*writers.values(), repeated):
            writer.close()
    if counts.duplicates:
        staged.rejected_files.append(duplicates_file)
    return counts


def write_rejected_csv(staged: StagedValidation, path: Path) -> int:
    """Every rejected row (the validator's and the duplicates) as one CSV whose header is every
    column seen; text cells a spreadsheet would evaluate made inert; streamed file by file."""
    columns: list[str] = []
    for file in staged.rejected_files:
        for name in pq.ParquetFile(file).schema_arrow.names:
            if name not in columns:
                columns.append(name)
    written = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns or [ROW_NUMBER, REASON, SOURCE_FILE])
        for file in staged.rejected_files:
            for batch in parquet_batches(file, CHUNK_ROWS):
                frame = batch.to_pandas().reindex(columns=columns)
                for row in frame.itertuples(index=False, name=None):
                    writer.writerow(["" if pd.isna(v) else inert_cell(v) for v in row])
                written += len(frame)
    return written


def rejected_chunks(staged: StagedValidation) -> Iterator[pd.DataFrame]:
    for file in staged.rejected_files:
        for batch in parquet_batches(file, CHUNK_ROWS):
            yield batch.to_pandas()


def split_chunks(out: Path) -> Iterator[pd.DataFrame]:
    """The written splits, chunk by chunk, each row with its split's name."""
    for name in SPLITS:
        file = out / name / f"{name}.parquet"
        if file.is_file():
            for batch in parquet_batches(file, CHUNK_ROWS):
                yield batch.to_pandas().assign(split=name)


def sample_rows(file: Path, rows: int, seed: int, scratch: Path) -> pd.DataFrame:
    """A reproducible sample of at most ``rows`` rows of a Parquet file (reservoir sampling in DuckDB)."""
    connection = _connect(scratch)
    try:
        source = str(file).replace("'", "''")
        sample: pd.DataFrame = connection.execute(
            f"SELECT * FROM read_parquet('{source}') "
            f"USING SAMPLE reservoir({int(rows)} ROWS) REPEATABLE ({int(seed)})"
        ).df()
    finally:
        connection.close()
    return sample
