"""Scoring a claims file row by row: CSV, JSON Lines or Parquet in; scores, rejected rows and a summary out.

The same code scores a file dropped into the local drop folder (``local/dropbox.py``), a file named on
the command line (``claims-risk batch score``) and, in AWS, each mini-batch of lines that SageMaker
batch transform sends to the inference script (``score_lines``), so nothing is lost anywhere: every
data row ends either **scored** or **rejected with its reason**, and the counts are checked at the end.

How a file is read (never whole; ``chunk_rows`` rows at a time, so memory stays bounded):

- **CSV**: one claim per line, as SageMaker's ``SplitType=Line`` cuts a file. The first non-blank line
  is the header when one of its cells names a spec column, or when it reads as names (no empty cell,
  no number) and does not have the spec's number of columns; otherwise the columns are the spec's, in
  order. A header that lacks a required column or names mostly columns the spec does not have (a
  file for another spec) fails the file once, naming the missing and unexpected columns, before any
  row is read. (A transform job's mini-batches after the first carry no header: the job is told the
  file's columns instead, see :func:`score_lines`.) Each line is decoded and parsed on its own, so a line that
  is not UTF-8, has broken quoting (an unclosed quote cannot swallow the lines after it) or has more
  or fewer fields than the header is rejected alone. A newline inside a quoted field is therefore
  not supported: SageMaker would cut the row there too.
- **JSON Lines** (``.jsonl``, and ``.json`` read as lines, as the AWS trigger does): one JSON object
  per line; a line that is not UTF-8, not JSON or not an object is rejected alone. When the fields
  of the first chunk's lines are mostly unknown to the spec and lack a required one, the file fails
  once (another spec's claims), not row by row.
- **Parquet**: record batches through pyarrow; a file pyarrow cannot read, or whose schema does not fit
  the spec as a CSV header would not, fails as a whole.

Blank lines are not rows. Row numbers are 1-based over data rows (the header excluded).

Every readable row is checked by :func:`shared.ml.validation.validate_frame`, with the rules the
validate job and the API apply (types, bounds, allowed values, dates, cross-field rules), plus: a
claim id already seen earlier in the file is rejected as a duplicate (within a chunk by
``validate_frame``, across chunks here), so the scored output has one answer per claim id. A label
column, if the file has one, is ignored. Valid rows are encoded from their typed values (the path the
training job takes: numbers stay numpy arrays) and scored with the model's compiled score and
explanation pass, the same pieces :meth:`RiskModel.predict_records` runs.

A file that cannot be scored at all (unknown suffix, unreadable header, a header for another spec or
without a required column, a corrupt Parquet file) raises :class:`BatchFileError`; the caller decides what
happens to it (the drop folder moves it to ``failed/``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, Protocol

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from shared.batch_jobs import (
    ClaimsHeaderError,
    columns_mismatch,
    csv_header_columns,
    is_header_line,
    not_text_reason,
)
from shared.csv_safety import InertCsvWriter
from shared.feature_spec import ColumnRole, FeatureSpec
from shared.ml.factor_text import factors_json
from shared.ml.frames import inert_text
from shared.ml.model import RiskModel
from shared.ml.score_distribution import ScoreDistribution
from shared.ml.seen_ids import SeenIds
from shared.ml.validation import REASON, ROW_NUMBER, validate_frame
from shared.payloads import CSV_OUTPUT_COLUMNS

CHUNK_ROWS: Final = 50_000  # rows read, validated and scored together: ~100 MB at most
# The real-time API's CSV columns, after the row's number in the file.
SCORED_COLUMNS: Final = ("row_number", *CSV_OUTPUT_COLUMNS)
REJECTED_COLUMNS: Final = ("row_number", "claim_id", "reason", "raw")
QUANTILES: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
TEXT_PROBE_BYTES: Final = 65536  # the first bytes that tell a text file from a binary one
_READ_RULE: Final = "read"  # rule-count key prefix of rows that could not be read


class BatchFileError(ValueError):
    """The file cannot be scored at all; the message says why."""


class BatchInvariantError(RuntimeError):
    """Scored plus rejected rows do not add up to the rows read: a bug, never silently accepted."""


class InputFormat(StrEnum):
    CSV = "csv"
    JSON_LINES = "jsonl"
    PARQUET = "parquet"


_SUFFIXES: Final = {
    ".csv": InputFormat.CSV,
    ".jsonl": InputFormat.JSON_LINES,
    ".json": InputFormat.JSON_LINES,
    ".parquet": InputFormat.PARQUET,
}


def input_format(path: Path) -> InputFormat:
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise BatchFileError(f"not a claims file: the name must end with {', '.join(_SUFFIXES)}")
    return found


# ---------------------------------------------------------------------------------------------
# Reading: chunks of rows, each row readable (raw values in the frame) or not (with the reason).


@dataclass
class RowChunk:
    """Consecutive data rows. Unreadable rows keep their place in ``frame`` with every value missing."""

    first_row: int  # 1-based number of the chunk's first row
    frame: pd.DataFrame
    unreadable: dict[int, tuple[str, str]] = field(default_factory=dict)  # position → (rule, reason)
    lines: Sequence[bytes] | None = None  # each row as read (CSV, JSON Lines); None: rendered on demand
    salvaged_ids: dict[int, str] = field(default_factory=dict)  # unreadable rows' ids, read leniently
    fields: list[str] | None = None  # JSON Lines: the fields the rows name, before the spec's are added

    def __len__(self) -> int:
        return len(self.frame)

    def raw_text(self, position: int) -> str:
        if self.lines is not None:  # decoded only here: most rows are never shown
            return _decode(self.lines[position])[0]
        row = self.frame.iloc[position]
        return orjson.dumps({k: v for k, v in row.items() if not _is_missing(v)}, default=str).decode()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # noqa: PLR0124 - NaN check


def _decode(line: bytes) -> tuple[str, str | None]:
    """The line's text, and why it is not UTF-8 (None when it is)."""
    try:
        return line.decode("utf-8").rstrip("\r\n"), None
    except UnicodeDecodeError as error:
        shown = line.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        return shown, f"not UTF-8: invalid byte at position {error.start + 1} of the line"


def _parse_csv_line(text: str) -> tuple[list[str] | None, str | None]:
    try:
        return next(csv.reader((text,), strict=True)), None
    except csv.Error as error:
        if "new-line character" in str(error):
            return None, "broken quoting: a line break (CR) inside an unquoted field"
        return None, f"broken quoting: {error}"
    except StopIteration:  # pragma: no cover - a non-blank line always yields a row
        return None, "empty line"


def csv_header(first_line: bytes, spec: FeatureSpec, *, whole_file: bool = True) -> tuple[list[str], bool]:
    """The columns, and whether ``first_line`` was the header (not a data row). The rules are the AWS
    trigger's too (:func:`shared.batch_jobs.csv_header_columns`), so both refuse the same headers.
    ``whole_file=False``: the first line of a transform's mini-batch (see there)."""
    try:
        header = csv_header_columns(first_line, spec, whole_file=whole_file)
    except ClaimsHeaderError as error:
        raise BatchFileError(str(error)) from None
    if header is None:
        return spec_csv_columns(spec), False
    return header, True


def spec_csv_columns(spec: FeatureSpec) -> list[str]:
    """The column order of a CSV without a header (what the inference script assumes too)."""
    return [c.name for c in spec.columns if c.role != ColumnRole.IGNORE]


def csv_chunk(lines: Sequence[bytes], header: Sequence[str], first_row: int, id_column: str) -> RowChunk:
    """Parse non-blank CSV lines, each on its own; a line that cannot be read is kept with its reason.

    Most lines are plain (UTF-8, no quote, no CR inside, the header's number of fields): for them the
    csv module's answer is the line split at its commas, so they are parsed together by Arrow's
    multithreaded reader; only the others go through the csv module one by one. Cells are strings
    either way (Arrow-backed), with None for every cell of an unreadable row."""
    width = len(header)
    plain, plain_text = _plain_lines(lines, width)
    if plain is None:  # every line plain
        table = _split_plain(plain_text, width)
    else:
        other = np.flatnonzero(~plain)
        rows, unreadable = _parse_by_line([lines[i] for i in other.tolist()], width)
        others = pa.table(
            {f"c{k}": pa.array([row[k] for row in rows], type=pa.string()) for k in range(width)}
        )
        combined = pa.concat_tables([_split_plain(plain_text, width), others]) if plain.any() else others
        order = np.empty(len(lines), dtype=np.int64)
        order[plain] = np.arange(int(plain.sum()))
        order[other] = np.arange(len(other)) + int(plain.sum())
        table = combined.take(pa.array(order))
    frame = table.to_pandas(types_mapper=_ARROW_STRINGS.get)
    frame.columns = list(header)
    chunk = RowChunk(first_row, frame, {}, lines)
    if plain is not None:
        chunk.unreadable = {int(other[k]): why for k, why in unreadable.items()}
    id_index = header.index(id_column) if id_column in header else -1
    if id_index >= 0 and chunk.unreadable:
        _salvage_ids(chunk, id_index, id_column)
    return chunk


_ARROW_STRINGS: Final = {pa.string(): pd.StringDtype("pyarrow")}
_BOM: Final = b"\xef\xbb\xbf"


def _plain_lines(lines: Sequence[bytes], width: int) -> tuple[np.ndarray | None, bytes]:
    """Which lines are plain (None: all of them), and the plain ones as one text, a line each."""
    joined = b"".join(lines)
    if not any(c in joined for c in (b'"', b"\r", b"\0", _BOM)) and (  # Arrow would drop a leading BOM
        joined.isascii() or _is_utf8(joined)
    ):
        commas = np.fromiter((line.count(b",") for line in lines), dtype=np.int64, count=len(lines))
        ended = np.fromiter((line.endswith(b"\n") for line in lines), dtype=bool, count=len(lines))
        newlines = joined.count(b"\n")
        if np.all(commas == width - 1):
            if newlines == ended.sum() and ended[:-1].all():  # as read from a file: one line end each
                return None, joined
            if newlines == 0:  # split already (a transform's mini-batch)
                return None, b"\n".join(lines)
    plain = np.zeros(len(lines), dtype=bool)
    bodies: list[bytes] = []
    for i, line in enumerate(lines):
        body = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
        if (
            not any(c in body for c in (b'"', b"\r", b"\n", b"\0", _BOM))
            and body.count(b",") == width - 1
            and (body.isascii() or _is_utf8(body))
        ):
            plain[i] = True
            bodies.append(body)
    return plain, b"\n".join(bodies)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _split_plain(data: bytes, width: int) -> pa.Table:
    """Plain lines (see :func:`csv_chunk`) split at their commas by Arrow, every cell a string, the
    columns named c0, c1, ... (a header may repeat a name)."""
    import pyarrow.csv as pa_csv

    names = [f"c{k}" for k in range(width)]
    if not data:
        return pa.table({name: pa.array([], type=pa.string()) for name in names})

    def read(block_size: int) -> pa.Table:
        return pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(column_names=names, block_size=block_size),
            parse_options=pa_csv.ParseOptions(quote_char=False, escape_char=False, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    try:
        return read(1 << 20)  # blocks of 1 MB, parsed on every core
    except pa.ArrowInvalid:  # a line longer than a block
        return read(len(data) + 1)


def _parse_by_line(
    lines: Sequence[bytes], width: int
) -> tuple[list[list[str] | list[None]], dict[int, tuple[str, str]]]:
    """The csv module's reading of each line on its own: its cells, or all None and the reason."""
    rows: list[list[str] | list[None]] = []
    unreadable: dict[int, tuple[str, str]] = {}
    blank: list[None] = [None] * width
    for position, line in enumerate(lines):
        text, not_utf8 = _decode(line)
        cells, broken = (None, None) if not_utf8 else _parse_csv_line(text)
        if not_utf8 or broken or cells is None:
            rule = "not_utf8" if not_utf8 else "quoting"
            unreadable[position] = (rule, str(not_utf8 or broken))
            rows.append(blank)
        elif len(cells) != width:
            extra = "an extra column" if len(cells) > width else "a column short"
            unreadable[position] = (
                "field_count",
                f"{len(cells)} fields where the header has {width} ({extra})",
            )
            rows.append(blank)
        else:
            rows.append(cells)
    return rows, unreadable


def _salvage_ids(chunk: RowChunk, id_index: int, id_column: str) -> None:
    """Best effort: an unreadable row's claim id, read leniently, so its rejection names the claim."""
    for position in chunk.unreadable:
        try:
            cells = next(csv.reader((chunk.raw_text(position),)), [])
        except csv.Error:  # a bare CR outside quotes, say: the rejection then names no claim
            continue
        if len(cells) > id_index:
            chunk.salvaged_ids[position] = cells[id_index].strip()


def jsonl_chunk(lines: Sequence[bytes], first_row: int, spec: FeatureSpec) -> RowChunk:
    records: list[dict[str, Any]] = []
    unreadable: dict[int, tuple[str, str]] = {}
    for position, line in enumerate(lines):
        text, not_utf8 = _decode(line)
        record: Any = {}
        if not_utf8:
            unreadable[position] = ("not_utf8", not_utf8)
        else:
            try:
                record = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                unreadable[position] = ("not_json", f"not JSON: {error}")
                record = {}
            if not isinstance(record, dict):
                unreadable[position] = ("not_an_object", "not a JSON object")
                record = {}
        records.append(record)
    # The index gives the row count even when no row has a field (every line unreadable, say).
    frame = pd.DataFrame.from_records(records, index=pd.RangeIndex(len(records)))
    fields = [str(c) for c in frame.columns]
    # Every spec column exists, so a field a row leaves out reads as missing, not as a missing column.
    for name in spec_csv_columns(spec):
        if name not in frame.columns:
            frame[name] = None
    frame.index = pd.RangeIndex(len(records))
    return RowChunk(first_row, frame.astype(object), unreadable, lines, fields=fields)


def _line_batches(source: IO[bytes], chunk_rows: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in source:
        if not line.strip():
            continue
        batch.append(line)
        if len(batch) >= chunk_rows:
            yield batch
            batch = []
    if batch:
        yield batch


def read_chunks(
    path: Path, spec: FeatureSpec, chunk_rows: int = CHUNK_ROWS, opened: IO[bytes] | None = None
) -> Iterator[RowChunk]:
    """The file's rows, ``chunk_rows`` at a time. ``opened``: read from this handle instead of
    opening ``path`` (whose name still gives the format), as the drop folder does with the file
    it checked, so a name swapped for a link meanwhile is never followed."""
    kind = input_format(path)
    if kind == InputFormat.PARQUET:
        yield from _parquet_chunks(opened or path, spec, chunk_rows)
        return
    with contextlib.nullcontext(opened) if opened is not None else path.open("rb") as source:
        start = source.tell()
        binary = not_text_reason(source.read(TEXT_PROBE_BYTES))
        if binary is not None:
            raise BatchFileError(binary)
        source.seek(start)
        batches = _line_batches(source, chunk_rows)
        next_row = 1
        if kind == InputFormat.CSV:
            first = next(batches, None)
            if first is None:
                raise BatchFileError("the file has no rows")
            header, had_header = csv_header(first[0], spec)
            pending = [first[1:] if had_header else first]
            for lines in _chain(pending, batches):
                if lines:
                    yield csv_chunk(lines, header, next_row, spec.id_column)
                    next_row += len(lines)
        else:
            for lines in batches:
                chunk = jsonl_chunk(lines, next_row, spec)
                if next_row == 1 and chunk.fields:
                    # Rows of another spec's file fail the file once, not each row for its fields.
                    mismatch = columns_mismatch(
                        chunk.fields, spec, what="fields of the first lines", lenient=True
                    )
                    if mismatch:
                        raise BatchFileError(mismatch)
                yield chunk
                next_row += len(lines)
    if next_row == 1:
        raise BatchFileError("the file has no rows")


def _chain(first: list[list[bytes]], rest: Iterator[list[bytes]]) -> Iterator[list[bytes]]:
    yield from first
    yield from rest


def _parquet_chunks(source: Path | IO[bytes], spec: FeatureSpec, chunk_rows: int) -> Iterator[RowChunk]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source, pre_buffer=False)  # shared/parquet_batches.py says why
    except (pa.ArrowException, OSError) as error:
        raise BatchFileError(f"not a readable Parquet file: {error}") from None
    mismatch = columns_mismatch(parquet.schema_arrow.names, spec, what="file")
    if mismatch:
        raise BatchFileError(mismatch)
    next_row = 1
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            frame = batch.to_pandas()
            for name in spec_csv_columns(spec):
                if name not in frame.columns:
                    frame[name] = None
            yield RowChunk(next_row, frame)
            next_row += len(frame)
    except pa.ArrowException as error:
        raise BatchFileError(f"the Parquet file is corrupt after row {next_row - 1}: {error}") from None
    if next_row == 1:
        raise BatchFileError("the file has no rows")


# ---------------------------------------------------------------------------------------------
# Scoring a chunk.


@dataclass
class ChunkOutcome:
    scored: pd.DataFrame  # SCORED_COLUMNS; risk_factors as JSON text
    rejected: pd.DataFrame  # REJECTED_COLUMNS
    scores: np.ndarray  # the scored rows' risk scores, for the summary
    rule_counts: Counter[str]


@dataclass
class PreparedChunk:
    """A chunk validated and encoded, waiting to be scored."""

    typed: pd.DataFrame  # the accepted rows' typed values
    matrix: np.ndarray  # their encoding
    row_numbers: np.ndarray  # their row numbers in the file
    rejected: pd.DataFrame  # REJECTED_COLUMNS
    rule_counts: Counter[str]


class BatchScorer:
    """Validates and scores chunks of one file, remembering the claim ids seen so far."""

    def __init__(self, model: RiskModel, *, explain: bool = True, today: dt.date | None = None) -> None:
        self.model = model
        self.explain = explain
        self.today = today
        self.spec = model.spec
        self._seen_ids = SeenIds()
        self._levels = model.encoder.level_fields  # fields whose factor value is the claim's level

    def score_chunk(self, chunk: RowChunk) -> ChunkOutcome:
        return self.finish(self.prepare(chunk))

    def prepare(self, chunk: RowChunk) -> PreparedChunk:
        """Validation, repeated ids, rejections and encoding: Python and pandas, holding the GIL.
        Chunks must be prepared in file order (the claim ids seen so far are remembered)."""
        spec, n = self.spec, len(chunk)
        raw = chunk.frame.drop(columns=[spec.target.column], errors="ignore")
        checked = validate_frame(
            raw, spec, require_target=False, row_offset=chunk.first_row - 1, today=self.today
        )
        reasons = np.full(n, "", dtype=object)
        rejected_at = checked.rejected[ROW_NUMBER].to_numpy(dtype=np.int64) - chunk.first_row
        reasons[rejected_at] = checked.rejected[REASON].to_numpy(dtype=object)
        counts = Counter(checked.rule_counts)
        for position, (rule, reason) in chunk.unreadable.items():
            # The row's values are all missing, so validation blamed the fields; the read error is the cause.
            reasons[position] = reason
            counts[f"{_READ_RULE}:{rule}"] += 1
        accepted_at = np.flatnonzero(np.isin(np.arange(n), rejected_at, invert=True))
        typed = checked.accepted
        if chunk.unreadable:  # a spec without required columns could accept an all-missing row
            keep = ~np.isin(accepted_at, list(chunk.unreadable))
            typed, accepted_at = typed[keep].reset_index(drop=True), accepted_at[keep]
        typed, accepted_at = self._drop_repeated_ids(typed, accepted_at, chunk.first_row, reasons, counts)
        rejected = self._rejected(chunk, raw, np.flatnonzero(reasons != ""), reasons)
        matrix = self.model.encoder.transform(typed, len(typed))
        return PreparedChunk(typed, matrix, accepted_at + chunk.first_row, rejected, counts)

    def finish(self, prepared: PreparedChunk) -> ChunkOutcome:
        """Scores, explanations and their text: mostly compiled code that releases the GIL, so it
        can run beside the next chunk's :meth:`prepare`."""
        scored, scores = self._score(prepared.typed, prepared.matrix, prepared.row_numbers)
        return ChunkOutcome(scored, prepared.rejected, scores, prepared.rule_counts)

    def _drop_repeated_ids(
        self,
        typed: pd.DataFrame,
        accepted_at: np.ndarray,
        first_row: int,
        reasons: np.ndarray,
        counts: Counter[str],
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Reject rows whose claim id an earlier chunk already scored; remember this chunk's ids."""
        id_column = self.spec.id_column
        if id_column not in typed.columns or typed.empty:
            return typed, accepted_at
        present = typed[id_column].notna().to_numpy()
        hashes = pd.util.hash_array(typed[id_column].astype(object).to_numpy()[present])
        rows = (accepted_at + first_row)[present]
        earlier = self._seen_ids.first_rows(hashes)
        repeated = np.zeros(len(typed), dtype=bool)
        repeated[np.flatnonzero(present)[earlier >= 0]] = True
        for index, row in zip(np.flatnonzero(repeated).tolist(), earlier[earlier >= 0].tolist(), strict=True):
            reasons[accepted_at[index]] = f"{id_column}: duplicate of row {row}"
        counts[f"{id_column}:duplicate"] += int(repeated.sum())
        self._seen_ids.add(hashes[earlier < 0], rows[earlier < 0])
        if repeated.any():
            return typed[~repeated].reset_index(drop=True), accepted_at[~repeated]
        return typed, accepted_at

    def _score(
        self, typed: pd.DataFrame, matrix: np.ndarray, row_numbers: np.ndarray
    ) -> tuple[pd.DataFrame, np.ndarray]:
        model, n = self.model, len(typed)
        if n == 0:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORED_COLUMNS}), np.zeros(0)
        factors: pa.Array
        if self.explain:
            # The steps of RiskModel.predict_records, from typed columns instead of JSON records, the
            # factors written as JSON text at once (the dict path for what the text path declines).
            margin, column_contributions = model.family.explain(matrix)
            scores = model.manifest.calibration.apply(margin)
            contributions = model._factor_sums(column_contributions)
            levels = {
                name: typed[name] if name in typed.columns else pd.Series([None] * n, dtype=object)
                for name in model.factor_layout.fields
            }
            as_text = factors_json(model.factor_layout, matrix, contributions, levels)
            if as_text is None:
                objects = model._top_factors(matrix, contributions, self._level_rows(typed))
                as_text = pa.array([orjson.dumps(f).decode() for f in objects], type=pa.string())
            factors = as_text
        else:
            scores = model.probabilities(matrix)
            factors = pa.array(["[]"] * n, type=pa.string())
        threshold = model.manifest.threshold
        high = scores >= threshold
        ids = typed[self.spec.id_column] if self.spec.id_column in typed.columns else pd.Series([""] * n)
        scored = pd.DataFrame(
            {
                "row_number": row_numbers.astype(np.int64),
                "claim_id": ids.fillna("").astype(str).to_numpy(dtype=object),
                "risk_level": np.where(high, "high", "low").astype(object),
                "risk_score": np.round(scores, 6),
                "confidence": np.round(np.where(high, scores, 1.0 - scores), 6),
                "model_version": model.version,
                "risk_factors": pd.Series(pd.arrays.ArrowStringArray(factors)),
            }
        )
        return scored, np.asarray(scores, dtype=np.float64)

    def _level_rows(self, typed: pd.DataFrame) -> list[dict[str, Any]]:
        """Each row's categorical levels, which the top factors report as the claim's own values."""
        if not self._levels:
            return [{} for _ in range(len(typed))]
        columns = [
            typed[name].astype(object).where(typed[name].notna(), None).tolist()
            if name in typed.columns
            else [None] * len(typed)
            for name in self._levels
        ]
        return [dict(zip(self._levels, values, strict=True)) for values in zip(*columns, strict=True)]

    def _rejected(
        self, chunk: RowChunk, raw: pd.DataFrame, positions: np.ndarray, reasons: np.ndarray
    ) -> pd.DataFrame:
        id_column = self.spec.id_column
        ids: list[str] = []
        for position in positions.tolist():
            value = raw[id_column].iat[position] if id_column in raw.columns else None
            if position in chunk.unreadable:
                value = chunk.salvaged_ids.get(position)
            ids.append("" if _is_missing(value) else str(value).strip())
        return pd.DataFrame(
            {
                "row_number": (positions + chunk.first_row).astype(np.int64),
                "claim_id": ids,
                "reason": reasons[positions].astype(str),
                "raw": [chunk.raw_text(p) for p in positions.tolist()],
            }
        )


# ---------------------------------------------------------------------------------------------
# Writing: the scored and rejected rows in the input's format family, appended chunk by chunk.


class RowWriter(Protocol):
    def write(self, frame: pd.DataFrame) -> None: ...

    def close(self) -> None: ...


def _factors_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    if "risk_factors" not in frame.columns or pd.api.types.is_string_dtype(frame["risk_factors"]):
        return frame
    out = frame.copy()
    out["risk_factors"] = [orjson.dumps(f).decode() for f in frame["risk_factors"]]
    return out


class _ArrowRowWriter:
    """Writes each chunk's rows through an Arrow writer, the factors as JSON text."""

    _schema: Any
    _writer: Any

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa

        if len(frame):
            table = pa.Table.from_pandas(_factors_as_text(frame), schema=self._schema, preserve_index=False)
            self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


class CsvRowWriter(_ArrowRowWriter):
    """Arrow's CSV writer (C++), quoting only where needed: pandas' writer took a seventh of the
    batch path's time on a million claims. Text cells a spreadsheet would evaluate are made inert
    (:mod:`shared.csv_safety`): claim ids, reasons and raw rows come from the file's sender."""

    def __init__(self, path: Path, columns: Sequence[str], types: Mapping[str, str]) -> None:
        import pyarrow.csv as pa_csv

        self._schema = _arrow_schema(columns, types)
        self._file = path.open("wb")
        self._writer = pa_csv.CSVWriter(
            self._file,
            self._schema,
            write_options=pa_csv.WriteOptions(include_header=True, quoting_style="needed"),
        )
        self._text_columns = [c for c in columns if types[c] == "string"]

    def write(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        safe = frame.copy(deep=False)
        for name in self._text_columns:  # the factors are JSON written by us: "[{...}]"
            if name in safe.columns and name != "risk_factors":
                safe[name] = inert_text(safe[name])
        super().write(safe)

    def close(self) -> None:
        super().close()
        self._file.close()


class JsonLinesRowWriter:
    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self._file = path.open("wb")
        self._columns = list(columns)

    def write(self, frame: pd.DataFrame) -> None:
        if not len(frame):
            return
        columns = [frame[c].tolist() for c in self._columns]
        if "risk_factors" in self._columns and pd.api.types.is_string_dtype(frame["risk_factors"]):
            at = self._columns.index("risk_factors")  # JSON text already: embedded as it is
            columns[at] = [orjson.Fragment(text) for text in columns[at]]
        option = orjson.OPT_APPEND_NEWLINE
        self._file.write(
            b"".join(
                orjson.dumps(dict(zip(self._columns, row, strict=True)), option=option)
                for row in zip(*columns, strict=True)
            )
        )

    def close(self) -> None:
        self._file.close()


class ParquetRowWriter(_ArrowRowWriter):
    def __init__(self, path: Path, columns: Sequence[str], types: Mapping[str, str]) -> None:
        import pyarrow.parquet as pq

        self._schema = _arrow_schema(columns, types)
        self._writer = pq.ParquetWriter(path, self._schema)


_COLUMN_TYPES: Final = {  # of the scored and rejected files, for Arrow
    "row_number": "int64",
    "claim_id": "string",
    "risk_level": "string",
    "risk_score": "float64",
    "confidence": "float64",
    "model_version": "string",
    "risk_factors": "string",
    "reason": "string",
    "raw": "string",
}


def _arrow_schema(columns: Sequence[str], types: Mapping[str, str]) -> Any:
    import pyarrow as pa

    kinds = {"int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    return pa.schema([(c, kinds[types[c]]) for c in columns])


def open_writer(path: Path, kind: InputFormat, columns: Sequence[str]) -> RowWriter:
    if kind == InputFormat.CSV:
        return CsvRowWriter(path, columns, _COLUMN_TYPES)
    if kind == InputFormat.JSON_LINES:
        return JsonLinesRowWriter(path, columns)
    return ParquetRowWriter(path, columns, _COLUMN_TYPES)


# ---------------------------------------------------------------------------------------------
# A whole file.


@dataclass
class FileOutputs:
    scored: Path
    rejected: Path
    # Also handed every chunk's rows, in file order (the claims lake's copy of a dropped file).
    mirror: RowMirror | None = None


class RowMirror(Protocol):
    def scored(self, frame: pd.DataFrame) -> None: ...

    def rejected(self, frame: pd.DataFrame) -> None: ...


class Cancelled(Exception):
    """Scoring stopped between chunks because the caller asked (its outputs are incomplete)."""


def score_file(
    model: RiskModel,
    source: Path,
    outputs: FileOutputs,
    *,
    explain: bool = True,
    chunk_rows: int = CHUNK_ROWS,
    today: dt.date | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    opened: IO[bytes] | None = None,
) -> dict[str, Any]:
    """Score ``source`` (or the already ``opened`` handle of it) into the two output files and
    return the summary (see :func:`summarise`)."""
    started, started_at = time.perf_counter(), dt.datetime.now(dt.UTC)
    kind = input_format(source)
    scorer = BatchScorer(model, explain=explain, today=today)
    rows_in = scored_rows = rejected_rows = 0
    counts: Counter[str] = Counter()
    distribution = ScoreDistribution(model.manifest.threshold)
    writers = [open_writer(outputs.scored, kind, SCORED_COLUMNS)]

    def finish_and_write(prepared: PreparedChunk) -> ChunkOutcome:
        outcome = scorer.finish(prepared)
        writers[0].write(outcome.scored)
        writers[1].write(outcome.rejected)
        if outputs.mirror is not None:
            outputs.mirror.scored(outcome.scored)
            outputs.mirror.rejected(outcome.rejected)
        return outcome

    def absorb(outcome: ChunkOutcome) -> None:
        nonlocal scored_rows, rejected_rows
        scored_rows += len(outcome.scored)
        rejected_rows += len(outcome.rejected)
        distribution.add(outcome.scores)

    try:
        writers.append(open_writer(outputs.rejected, kind, REJECTED_COLUMNS))
        # One chunk is scored and written on a second thread while the next is read and validated
        # (the GIL-bound half): at most two chunks in memory, written in file order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="claims-risk-batch") as finisher:
            pending: Future[ChunkOutcome] | None = None
            for chunk in read_chunks(source, model.spec, chunk_rows, opened):
                if should_stop():
                    raise Cancelled(f"stopped after {rows_in} rows")
                prepared = scorer.prepare(chunk)
                rows_in += len(chunk)
                counts.update(prepared.rule_counts)
                if pending is not None:
                    absorb(pending.result())
                pending = finisher.submit(finish_and_write, prepared)
            if pending is not None:
                absorb(pending.result())
    finally:
        for writer in writers:
            writer.close()
    if scored_rows + rejected_rows != rows_in:
        raise BatchInvariantError(
            f"{source.name}: {scored_rows} scored + {rejected_rows} rejected != {rows_in} rows read"
        )
    return summarise(
        model,
        source,
        rows_in=rows_in,
        rejected=rejected_rows,
        scores=distribution,
        rule_counts=counts,
        seconds=time.perf_counter() - started,
        started_at=started_at,
        explain=explain,
    )


def summarise(
    model: RiskModel,
    source: Path,
    *,
    rows_in: int,
    rejected: int,
    scores: ScoreDistribution,
    rule_counts: Counter[str],
    seconds: float,
    started_at: dt.datetime,
    explain: bool,
) -> dict[str, Any]:
    """Counts, the score distribution (quantiles and the share per risk level), time and model."""
    threshold = model.manifest.threshold
    scored, high, mean = scores.count, scores.high, scores.mean
    distribution: dict[str, Any] = {
        "mean": round(mean, 6) if mean is not None else None,
        "quantiles": {f"p{round(q * 100):02d}": round(v, 6) for q, v in scores.quantiles(QUANTILES).items()},
        "share_by_risk_level": {
            "high": round(high / scored, 6) if scored else 0.0,
            "low": round((scored - high) / scored, 6) if scored else 0.0,
        },
        "count_by_risk_level": {"high": high, "low": scored - high},
    }
    return {
        "file": source.name,
        "rows_in": rows_in,
        "scored": scored,
        "rejected": rejected,
        "rejections_by_rule": dict(sorted((k, v) for k, v in rule_counts.items() if v)),
        "score_distribution": distribution,
        "model_version": model.version,
        "threshold": threshold,
        "risk_factors": explain,
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "claims_per_second": round(rows_in / seconds, 1) if seconds > 0 else None,
    }


# ---------------------------------------------------------------------------------------------
# SageMaker batch transform: one mini-batch of lines in, exactly one result per non-blank line out.


def score_lines(
    model: RiskModel,
    body: bytes,
    kind: InputFormat,
    *,
    explain: bool = True,
    csv_columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Score one request body of CSV or JSON Lines lines (``SplitType=Line``), in order; or a whole
    Parquet file (which SageMaker sends unsplit), row by row.

    Each non-blank line (Parquet: each row) gives one result: the prediction (the fields
    :meth:`RiskModel.predict_records` returns), or ``{"claim_id", "error"}`` naming why the line was
    rejected. A CSV header line (the
    file's first mini-batch carries it) gives ``{"header": true}``, which the renderer turns into the
    output's header. Rows are checked as in a file, but a mini-batch knows nothing of the others, so
    a repeated claim id is caught only within one mini-batch.

    ``csv_columns`` is the file's header as the batch trigger read it (``CLAIMS_RISK_CSV_COLUMNS``):
    only the first mini-batch holds the header line, so every mini-batch is read in that order, and
    the header line is recognised (it equals the columns) and skipped in whichever one holds it: the
    file's first line, so the first line of its mini-batch. Without it, a mini-batch whose first line
    names a spec column reads by that line, any other by the spec's order.
    """
    spec = model.spec
    if kind == InputFormat.PARQUET:
        scorer = BatchScorer(model, explain=explain)
        results: list[dict[str, Any]] = []
        for parquet_chunk in _parquet_chunks(io.BytesIO(body), spec, CHUNK_ROWS):
            results.extend(_in_row_order(model, parquet_chunk, scorer.score_chunk(parquet_chunk)))
        return results
    lines = [line for line in body.splitlines() if line.strip()]
    if not lines:
        return []
    header_line: list[dict[str, Any]] = []
    if kind == InputFormat.CSV:
        if csv_columns:
            header, had_header = list(csv_columns), is_header_line(lines[0], csv_columns)
        else:
            header, had_header = csv_header(lines[0], spec, whole_file=False)
        if had_header:
            header_line, lines = [{"header": True}], lines[1:]
        chunk = csv_chunk(lines, header, 1, spec.id_column)
    elif kind == InputFormat.JSON_LINES:
        chunk = jsonl_chunk(lines, 1, spec)
    else:  # pragma: no cover - every InputFormat is handled above
        raise BatchFileError(f"{kind} cannot be split into lines")
    return header_line + _in_row_order(model, chunk, BatchScorer(model, explain=explain).score_chunk(chunk))


def _in_row_order(model: RiskModel, chunk: RowChunk, outcome: ChunkOutcome) -> list[dict[str, Any]]:
    """One result per row of the chunk: its prediction, or its claim id and the error."""
    results: list[dict[str, Any]] = [{} for _ in range(len(chunk))]
    first = chunk.first_row
    threshold = model.manifest.threshold
    scored = outcome.scored
    columns = [c for c in SCORED_COLUMNS if c != "row_number"]
    texts = scored["risk_factors"].tolist()
    values = zip(
        *(scored[c].tolist() if c != "risk_factors" else [orjson.loads(t) for t in texts] for c in columns),
        strict=True,
    )
    for row_number, row in zip(scored["row_number"].tolist(), values, strict=True):
        results[row_number - first] = {**dict(zip(columns, row, strict=True)), "threshold": threshold}
    rejected = outcome.rejected
    for row_number, claim_id, reason in zip(
        rejected["row_number"].tolist(),
        rejected["claim_id"].tolist(),
        rejected["reason"].tolist(),
        strict=True,
    ):
        results[row_number - first] = {"claim_id": claim_id, "error": reason}
    return results


# A transform job's CSV output: the real-time API's columns and the reason a row was rejected.
LINE_CSV_COLUMNS: Final = (*CSV_OUTPUT_COLUMNS, "error")


def render_line_results(results: Iterable[dict[str, Any]], as_csv: bool) -> bytes:
    """One output line per result: JSON Lines, or CSV with an ``error`` column (empty when scored)."""
    if not as_csv:
        option = orjson.OPT_APPEND_NEWLINE
        return b"".join(orjson.dumps(r, option=option) for r in results if "header" not in r)
    out: list[list[Any]] = []
    for result in results:
        if "header" in result:
            out.append(list(LINE_CSV_COLUMNS))
        elif "error" in result:
            out.append([result["claim_id"], "", "", "", "", "", result["error"]])
        else:
            factors = orjson.dumps(result["risk_factors"]).decode()
            out.append([*(result[c] for c in LINE_CSV_COLUMNS[:5]), factors, ""])
    buffer = io.StringIO()
    InertCsvWriter(buffer).writerows(out)
    return buffer.getvalue().encode("utf-8")
