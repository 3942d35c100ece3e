"""A completed drop-folder transform job's rows, into the claims lake as the drop folder puts them there.

The lake job (``sagemaker_jobs/processing/batch_lake.py``; why and when it runs: :mod:`shared.batch_lake`)
reads two objects:

- the transform's output, ``<file>.out`` under the job's ``S3OutputPath``: one result per input row,
  in the input's order (``AssembleWith=Line``; the inference script answers every non-blank line with
  its prediction, or its claim id and why it was rejected: :func:`shared.ml.batch_scoring.score_lines`).
  SageMaker writes it only once the whole file was scored: "Batch transform doesn't upload partially
  processed objects" (TransformOutput, S3OutputPath, in the SageMaker API reference);
- the dropped object itself, the very version the job scored (its ``source-version`` tag, which the
  trigger set), read in step with the output: each rejected row's raw text comes from it, and its
  SHA-256 gives the partition, ``batch_id`` = the first 32 hex digits, the drop folder's rule
  (local/dropbox.py), so the same content lands in the same partition whichever path scored it.

Both tables are written through :class:`shared.lake_writers.BatchMirror`, the drop folder's writer:
``batch_scored`` and ``rejected_rows`` (stage ``batch``) change only when the whole file was read,
and a second run replaces them. Row numbers count data rows from 1 as the drop folder does (blank
lines and the header are not rows). A count that does not match (input rows against results) fails
the job without changing the lake: a partition is never written from misaligned rows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Protocol

import orjson

from shared.batch_jobs import CSV, PARQUET, declared_csv_columns, is_header_line
from shared.csv_safety import FORMULA_TRIGGERS, is_plain_number

if TYPE_CHECKING:
    import pandas as pd

    from shared.ports import ClaimsLake

CHUNK_ROWS: Final = 50_000  # rows per lake write: the drop folder's chunk
BATCH_ID_CHARS: Final = 32  # the drop folder's partition: sha256[:32] of the file (local/dropbox.py)
_READ_BLOCK: Final = 8 * 1024 * 1024
SOURCE_VERSION_TAG: Final = "source-version"  # set by the trigger (shared.batch_jobs.plan_transform_job)
SCORED_FIELDS: Final = ("claim_id", "risk_level", "risk_score", "confidence", "model_version", "risk_factors")


class TransformResultsError(RuntimeError):
    """The transform's results cannot be mirrored; the message says which object and why."""


@dataclass(frozen=True)
class TransformJobRecord:
    """What the lake job needs of ``DescribeTransformJob`` and the job's tags."""

    name: str
    status: str
    input_uri: str
    output_uri: str
    content_type: str
    accept: str
    environment: Mapping[str, str]
    tags: Mapping[str, str]
    ended_at: datetime | None = None

    @property
    def source_version(self) -> str | None:
        """The object version the job scored; None when the bucket gave none (then the current one)."""
        version = self.tags.get(SOURCE_VERSION_TAG, "none")
        # The trigger stands in "none" or the event's sequencer for a bucket without versioning.
        return None if version == "none" or version.startswith("sequencer-") else version


class TransformJobReader(Protocol):
    """SageMaker's description of a transform job (``DescribeTransformJob`` and ``ListTags``)."""

    def describe(self, name: str) -> TransformJobRecord: ...


class ObjectFiles(Protocol):
    """Objects fetched to local files (S3 in AWS)."""

    def keys_under(self, prefix_uri: str) -> list[str]:
        """The URIs of the objects under ``prefix_uri``."""
        ...

    def download(self, uri: str, version_id: str | None, target: Path) -> None:
        """The object (that version, when given) into ``target``; ``FileNotFoundError`` when absent."""
        ...


@dataclass(frozen=True)
class MirrorSummary:
    transform_job: str
    source: str
    version_id: str | None
    source_file: str
    batch_id: str
    rows: int
    batch_scored: int
    rejected_rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise TransformResultsError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def batch_id_of(sha256_hex: str) -> str:
    return sha256_hex[:BATCH_ID_CHARS]


def source_file_of(key: str, incoming_prefix: str) -> str:
    """The file's path below the drop folder (the local drop folder's file name, for a flat folder)."""
    return key[len(incoming_prefix) :] if key.startswith(incoming_prefix) else key


def output_uri_of(job: TransformJobRecord, files: ObjectFiles) -> str:
    """``<input name>.out`` under the job's output folder: the one SageMaker wrote for the dropped
    object (an ``S3Prefix`` input may have matched a sibling, whose ``.out`` is not this file's)."""
    name = _split(job.input_uri)[1].rsplit("/", 1)[-1]
    prefix = job.output_uri if job.output_uri.endswith("/") else job.output_uri + "/"
    found = [uri for uri in files.keys_under(prefix) if uri.rsplit("/", 1)[-1] == f"{name}.out"]
    exact = f"{prefix}{name}.out"
    if exact in found:
        return exact
    if len(found) == 1:
        return found[0]
    if not found:
        raise TransformResultsError(f"no {name}.out under {prefix}: the transform wrote no output for it")
    raise TransformResultsError(f"several {name}.out under {prefix}: {sorted(found)}")


# ---------------------------------------------------------------------------------------------
# The two streams, in step.


def _text(line: bytes) -> str:
    """A row as the drop folder shows it: UTF-8, an invalid byte escaped, no line end."""
    return line.decode("utf-8", errors="backslashreplace").rstrip("\r\n")


def _line_rows(source: IO[bytes], csv_columns: Sequence[str] | None, *, decode: bool = True) -> Iterator[str]:
    """Each data row's raw text, as the container took the rows: SageMaker cuts the file at ``\\n``
    and the inference script splits each mini-batch into lines (``bytes.splitlines``) and skips blank
    ones; a CSV's header line (the columns the trigger passed) is no row. ``decode=False``: only
    counted (an empty text for each row)."""
    first = True
    for physical in source:
        for piece in physical.splitlines():
            if not piece.strip():
                continue
            if first and csv_columns and is_header_line(piece, csv_columns):
                first = False
                continue
            first = False
            yield _text(piece) if decode else ""


def _parquet_row_count(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError) as error:
        raise TransformResultsError(f"the dropped Parquet file cannot be read again: {error}") from None


def _parquet_rows(path: Path, chunk_rows: int) -> Iterator[str]:
    """Each Parquet row as the drop folder shows a rejected one (its non-missing values, as JSON)."""
    import pyarrow as pa

    from shared.ml.batch_scoring import RowChunk
    from shared.parquet_batches import parquet_batches

    try:
        for batch in parquet_batches(path, chunk_rows):
            chunk = RowChunk(1, batch.to_pandas())
            yield from (chunk.raw_text(i) for i in range(len(chunk)))
    except (pa.ArrowException, OSError) as error:
        raise TransformResultsError(f"the dropped Parquet file cannot be read again: {error}") from None


def plain_cell(cell: str) -> str:
    """A cell of the transform's CSV output with the quote that made it inert in spreadsheets removed
    (:mod:`shared.csv_safety` adds one to text starting with ``=``, ``+``, ``-``, ``@``…): the lake
    keeps what the sender sent, as the drop folder's copy does."""
    if (
        cell.startswith("'")
        and len(cell) > 1
        and cell[1] in FORMULA_TRIGGERS
        and not is_plain_number(cell[1:])
    ):
        return cell[1:]
    return cell


def _float(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def _csv_results(source: IO[bytes]) -> Iterator[dict[str, Any]]:
    from shared.ml.batch_scoring import LINE_CSV_COLUMNS

    text = io.TextIOWrapper(source, encoding="utf-8", newline="")  # quoted line breaks stay in their cell
    header = list(LINE_CSV_COLUMNS)
    first = True
    for number, cells in enumerate(csv.reader(text)):
        if not cells:  # SageMaker's line between two mini-batches' answers
            continue
        if first and cells == header:  # the answer to a CSV's header line
            first = False
            continue
        first = False
        if len(cells) != len(header):
            raise TransformResultsError(f"output line {number + 1} has {len(cells)} cells, not {len(header)}")
        claim_id, level, score, confidence, version, factors, error = cells
        if error:
            yield {"claim_id": plain_cell(claim_id), "error": plain_cell(error)}
        else:
            yield {
                "claim_id": plain_cell(claim_id),
                "risk_level": level,
                "risk_score": _float(score),
                "confidence": _float(confidence),
                "model_version": plain_cell(version),
                "risk_factors": factors,
            }


def _json_results(source: IO[bytes]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            result = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            raise TransformResultsError(f"output line {number} is not JSON: {error}") from None
        if not isinstance(result, dict):
            raise TransformResultsError(f"output line {number} is not a JSON object")
        if "error" in result:
            yield {"claim_id": result.get("claim_id"), "error": str(result["error"])}
            continue
        factors = result.get("risk_factors")
        yield {
            **{k: result.get(k) for k in SCORED_FIELDS},
            "risk_score": _float(result.get("risk_score")),
            "confidence": _float(result.get("confidence")),
            "risk_factors": None if factors is None else orjson.dumps(factors).decode("utf-8"),
        }


def _frames(
    scored: list[dict[str, Any]], rejected: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    import pandas as pd

    scored_frame = pd.DataFrame(scored, columns=["row_number", *SCORED_FIELDS])
    rejected_frame = pd.DataFrame(rejected, columns=["row_number", "claim_id", "reason", "raw"])
    return scored_frame, rejected_frame


def result_chunks(
    source: Path,
    output: Path,
    *,
    content_type: str,
    accept: str,
    environment: Mapping[str, str],
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """The scored and the rejected rows, ``chunk_rows`` input rows at a time, in file order: each
    input row paired with its result. Raises :class:`TransformResultsError` when they do not pair,
    before the first chunk: both files are counted first, so a lake is never half-written from them."""
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    columns = declared_csv_columns(environment) if media == CSV.content_type else None
    as_csv = accept.split(";", maxsplit=1)[0].strip().lower() == CSV.accept
    with output.open("rb") as results_file:
        counted = sum(1 for _ in (_csv_results(results_file) if as_csv else _json_results(results_file)))
    if media == PARQUET.content_type:
        rows_in = _parquet_row_count(source)
    else:
        with source.open("rb") as dropped:
            rows_in = sum(1 for _ in _line_rows(dropped, columns, decode=False))
    if rows_in != counted:
        raise TransformResultsError(
            f"the output does not pair with the input: {rows_in} input rows, {counted} results"
        )
    with source.open("rb") as dropped, output.open("rb") as results_file:
        rows = (
            _parquet_rows(source, chunk_rows)
            if media == PARQUET.content_type
            else _line_rows(dropped, columns)
        )
        results = _csv_results(results_file) if as_csv else _json_results(results_file)
        scored: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        missing = object()
        number = only_rows = only_results = 0
        for raw, result in itertools.zip_longest(rows, results, fillvalue=missing):
            if raw is missing or result is missing:  # counted to the end, for the message
                only_rows += result is missing
                only_results += raw is missing
                continue
            number += 1
            assert isinstance(result, dict) and isinstance(raw, str)
            claim_id = result["claim_id"]
            if "error" in result:
                rejected.append(
                    {
                        "row_number": number,
                        "claim_id": "" if claim_id is None else str(claim_id),
                        "reason": result["error"],
                        "raw": raw,
                    }
                )
            else:
                text_id = None if claim_id is None else str(claim_id)
                scored.append({**result, "row_number": number, "claim_id": text_id})
            if len(scored) + len(rejected) >= chunk_rows:
                yield _frames(scored, rejected)
                scored, rejected = [], []
        if only_rows or only_results:
            raise TransformResultsError(
                f"the output does not pair with the input: {number + only_rows} input rows, "
                f"{number + only_results} results"
            )
        if number == 0:
            raise TransformResultsError("the dropped file has no rows and its output no results")
        if scored or rejected:
            yield _frames(scored, rejected)


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def mirror_transform_job(
    job: TransformJobRecord,
    files: ObjectFiles,
    lake: ClaimsLake,
    workdir: Path,
    *,
    incoming_prefix: str,
    chunk_rows: int = CHUNK_ROWS,
) -> MirrorSummary:
    """Write ``job``'s scored and rejected rows to the lake, replacing the file's partitions."""
    from shared.lake_writers import BatchMirror

    if job.status != "Completed":
        raise TransformResultsError(f"{job.name} is {job.status}: only a completed job's output is whole")
    _, key = _split(job.input_uri)
    source, output = workdir / "source", workdir / "output.out"
    try:
        files.download(job.input_uri, job.source_version, source)
        out_uri = output_uri_of(job, files)
        files.download(out_uri, None, output)
    except FileNotFoundError as error:
        raise TransformResultsError(f"{job.name}: {error}") from None
    batch_id = batch_id_of(file_sha256(source))
    source_file = source_file_of(key, incoming_prefix)
    mirror = BatchMirror(lake, batch_id, source_file)
    ended = _naive_utc(job.ended_at)
    if ended is not None:
        mirror.started = ended  # scored_at / rejected_at: when SageMaker scored it, not this run's time
    rows = 0
    try:
        for scored, rejected in result_chunks(
            source,
            output,
            content_type=job.content_type,
            accept=job.accept,
            environment=job.environment,
            chunk_rows=chunk_rows,
        ):
            rows += len(scored) + len(rejected)
            mirror.scored(scored)
            mirror.rejected(rejected)
        scored_rows, rejected_rows = mirror.commit()
    except BaseException:
        mirror.abort()  # half a partition is worse than none: the scored output stays in S3
        raise
    return MirrorSummary(
        transform_job=job.name,
        source=job.input_uri,
        version_id=job.source_version,
        source_file=source_file,
        batch_id=batch_id,
        rows=rows,
        batch_scored=scored_rows,
        rejected_rows=rejected_rows,
    )
