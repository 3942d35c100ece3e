"""Drop-folder batch scoring: which S3 objects are claims files, and the transform job each one gets.

Pure domain: no boto3 and no clock. The batch-trigger Lambda feeds it one S3 object (bucket, key,
version) and hands the resulting :class:`TransformJobSpec` to a :class:`shared.ports.TransformJobLauncher`.

**A CSV's columns.** SageMaker cuts a CSV at line ends into mini-batches (``SplitType=Line``) and
only the first one carries the header line, so the container cannot learn the file's column order
from the body. The trigger therefore reads the file's first line (:func:`inspect_claims_file`, a
bounded ranged read through :class:`shared.ports.ObjectHeadReader`), checks it against the claim
schema (a header without a required column starts no job) and passes the order to the job in
``CLAIMS_RISK_CSV_COLUMNS``; the inference script reads every mini-batch in that order and skips the
header line where it finds it. A CSV whose first line names no known column has no header: its
rows are read in the spec's order, as before.

**Whose spec.** The header is checked against the spec of the model that serves (a model trained on
a bring-your-own-data spec expects that spec's columns): the deploy step publishes the model's
``feature_spec.json`` beside its model card, and :func:`serving_spec` reads it through an
:class:`shared.ports.ArtifactStore`. Before any model is deployed there is none, and the default
claims spec stands in. The drop folder checks with the loaded model's spec (``RiskModel.spec``), so
both refuse the same headers.

**A refused file's answer.** A file named as claims whose content cannot be scored (its header, its
size) starts no job; its sender finds why in a small JSON note, :func:`refusal_note`, written at
:func:`refusal_note_uri`: ``rejected/<path below incoming/>/refused.json``, the folder where a job
would have put the file's rejected rows. The dropped file stays where it is.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from shared.ports import TransformJobError

if TYPE_CHECKING:  # the spec is built on first use only (pydantic), and only for CSV drops
    from shared.feature_spec import FeatureSpec
    from shared.ports import ArtifactStore, ObjectHeadReader

REJECTED_URI_ENV = "CLAIMS_RISK_REJECTED_S3_URI"  # read by the inference script inside the container
# The CSV file's column order, a JSON array, read by the inference script (see the module's docstring).
CSV_COLUMNS_ENV = "CLAIMS_RISK_CSV_COLUMNS"
# How much of a CSV the trigger reads to find its header: a first line longer than this is no header.
HEADER_READ_BYTES = 64 * 1024
# botocore's sagemaker service model, CreateTransformJob's Environment (TransformEnvironmentMap): at
# most 16 variables, each value (TransformEnvironmentValue) at most 10240 characters.
ENV_VALUE_MAX = 10240
# The note a refused file's sender finds in the folder of the file's rejected rows (see the docstring).
REFUSAL_NOTE = "refused.json"
JOB_NAME_PREFIX = "claims-batch-"
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's TransformJobName
_JOB_NAME_MAX = 63
_HASH_CHARS = 12  # 48 bits: a clash needs ~16 million files with the same slug
_SLUG_MAX = _JOB_NAME_MAX - len(JOB_NAME_PREFIX) - 1 - _HASH_CHARS
_S3_URI_MAX = 1024  # SageMaker's limit on S3Uri and S3OutputPath
_TAG_VALUE_MAX = 256
_MB = 1024 * 1024

SplitType = Literal["Line", "None"]
BatchStrategy = Literal["MultiRecord", "SingleRecord"]
BATCH_STRATEGIES: Final[tuple[BatchStrategy, ...]] = ("MultiRecord", "SingleRecord")
# CreateTransformJob's MaxPayloadInMB: "cannot be greater than 100 MB. If you specify the
# MaxConcurrentTransforms parameter, the value of (MaxConcurrentTransforms * MaxPayloadInMB) also
# cannot exceed 100 MB" (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html,
# the same words in botocore's sagemaker model).
MAX_PAYLOAD_TOTAL_MB: Final = 100
# Each job scores the one object dropped, and SageMaker hands an input object to one instance: "If you
# have one input file but initialize multiple compute instances, only one instance processes the input
# file and the rest of the instances are idle" (https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform.html).
USEFUL_INSTANCES_PER_JOB: Final = 1


@dataclass(frozen=True)
class ClaimsFormat:
    """How SageMaker reads one kind of claims file and what it writes back."""

    suffix: str
    content_type: str
    split_type: SplitType
    accept: str


CSV = ClaimsFormat(".csv", "text/csv", "Line", "text/csv")
JSON_LINES = ClaimsFormat(".jsonl", "application/jsonlines", "Line", "application/jsonlines")
# A .json drop is read as JSON Lines: one claim per line is what splits into mini-batches.
JSON_AS_LINES = ClaimsFormat(".json", "application/jsonlines", "Line", "application/jsonlines")
# Parquet cannot be cut at line breaks, so the file goes to the container whole; rows come back as lines.
PARQUET = ClaimsFormat(".parquet", "application/x-parquet", "None", "application/jsonlines")
FORMATS: tuple[ClaimsFormat, ...] = (CSV, JSON_LINES, JSON_AS_LINES, PARQUET)


@dataclass(frozen=True)
class BatchSettings:
    incoming_prefix: str = "incoming/"
    scored_prefix: str = "scored/"
    rejected_prefix: str = "rejected/"
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    max_payload_mb: int = 6
    kms_key_id: str | None = None
    # Requests in flight to each instance; SageMaker's own default when unset is 1.
    max_concurrent_transforms: int = 1
    batch_strategy: BatchStrategy = "MultiRecord"  # for line-split files; an unsplit one is one record

    def __post_init__(self) -> None:
        prefixes = {
            "INCOMING_PREFIX": self.incoming_prefix,
            "SCORED_PREFIX": self.scored_prefix,
            "REJECTED_PREFIX": self.rejected_prefix,
        }
        for name, prefix in prefixes.items():
            if not prefix or not prefix.endswith("/") or prefix.startswith("/"):
                raise ValueError(f"{name} must be a folder like 'incoming/', not {prefix!r}")
        # Outputs written under the drop folder would trigger new jobs on themselves, without end.
        for name in ("SCORED_PREFIX", "REJECTED_PREFIX"):
            inner, outer = sorted((prefixes[name], self.incoming_prefix), key=len)
            if outer.startswith(inner):
                raise ValueError(
                    f"{name} {prefixes[name]!r} overlaps INCOMING_PREFIX {self.incoming_prefix!r}"
                )
        if not re.fullmatch(r"ml\.[a-z0-9]+\.[a-z0-9]+", self.instance_type):
            raise ValueError(
                f"TRANSFORM_INSTANCE_TYPE must look like ml.m5.large, not {self.instance_type!r}"
            )
        if self.instance_count < 1:
            raise ValueError(f"TRANSFORM_INSTANCE_COUNT must be at least 1, not {self.instance_count}")
        # 0 would mean chunked streaming, which the model server does not take.
        if not 1 <= self.max_payload_mb <= MAX_PAYLOAD_TOTAL_MB:
            raise ValueError(
                f"TRANSFORM_MAX_PAYLOAD_MB must be 1 to 100 (SageMaker's limit), not {self.max_payload_mb}"
            )
        if self.max_concurrent_transforms < 1:
            raise ValueError(
                f"TRANSFORM_MAX_CONCURRENT must be at least 1, not {self.max_concurrent_transforms}"
            )
        in_flight = self.max_concurrent_transforms * self.max_payload_mb
        if in_flight > MAX_PAYLOAD_TOTAL_MB:
            raise ValueError(
                f"TRANSFORM_MAX_CONCURRENT times TRANSFORM_MAX_PAYLOAD_MB is {in_flight} MB: SageMaker takes "
                f"at most {MAX_PAYLOAD_TOTAL_MB} MB in flight per instance"
            )
        if self.batch_strategy not in BATCH_STRATEGIES:
            raise ValueError(
                f"TRANSFORM_BATCH_STRATEGY must be one of {', '.join(BATCH_STRATEGIES)}, "
                f"not {self.batch_strategy!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> BatchSettings:
        """Unset or empty variables keep the defaults; bad values raise ValueError naming the variable."""
        defaults = cls()

        def text(name: str, default: str) -> str:
            return environ.get(name, "").strip() or default

        def number(name: str, default: int) -> int:
            raw = text(name, str(default))
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a whole number, not {raw!r}") from None

        return cls(
            incoming_prefix=_as_folder(text("INCOMING_PREFIX", defaults.incoming_prefix)),
            scored_prefix=_as_folder(text("SCORED_PREFIX", defaults.scored_prefix)),
            rejected_prefix=_as_folder(text("REJECTED_PREFIX", defaults.rejected_prefix)),
            instance_type=text("TRANSFORM_INSTANCE_TYPE", defaults.instance_type),
            instance_count=number("TRANSFORM_INSTANCE_COUNT", defaults.instance_count),
            max_payload_mb=number("TRANSFORM_MAX_PAYLOAD_MB", defaults.max_payload_mb),
            kms_key_id=text("DATA_KMS_KEY_ID", "") or None,
            max_concurrent_transforms=number("TRANSFORM_MAX_CONCURRENT", defaults.max_concurrent_transforms),
            batch_strategy=cast(BatchStrategy, text("TRANSFORM_BATCH_STRATEGY", defaults.batch_strategy)),
        )


def _as_folder(prefix: str) -> str:
    # "incoming" and "incoming/" mean the same folder; the trailing slash keeps "incoming-old/" out.
    return prefix if prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True)
class NotAClaimsFile:
    """An object the trigger skips, and why."""

    bucket: str
    key: str
    reason: str
    # A file named as claims whose content is refused (its header): someone expected it scored.
    refused: bool = False
    spec: FeatureSpec | None = None  # the spec a refused CSV header was checked against

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.key)


@dataclass(frozen=True)
class ClaimsFile:
    """A claims file the trigger can start a job for."""

    format: ClaimsFormat
    csv_columns: tuple[str, ...] | None = None  # a CSV's header, in the file's order; None: none to pass


class ClaimsHeaderError(ValueError):
    """A CSV's first line cannot serve as its header; the message says why."""


@dataclass(frozen=True)
class TransformJobSpec:
    """Everything CreateTransformJob needs for one claims file."""

    job_name: str
    input_uri: str  # exactly the one object, never a prefix of several
    content_type: str
    split_type: SplitType
    output_uri: str
    rejected_uri: str
    accept: str
    assemble_with: Literal["Line"]
    instance_type: str
    instance_count: int
    model_name: str
    max_payload_mb: int
    kms_key_id: str | None
    environment: Mapping[str, str]
    tags: Mapping[str, str]
    max_concurrent_transforms: int = 1
    line_batch_strategy: BatchStrategy = "MultiRecord"

    @property
    def batch_strategy(self) -> BatchStrategy:
        # Line-split files go in mini-batches (the stage's strategy); an unsplit file is one record.
        return self.line_batch_strategy if self.split_type == "Line" else "SingleRecord"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def claims_format(
    bucket: str, key: str, size: int | None, *, settings: BatchSettings
) -> ClaimsFormat | NotAClaimsFile:
    """The object's claims format, or why it is not a claims file the trigger can score."""

    def skip(reason: str) -> NotAClaimsFile:
        return NotAClaimsFile(bucket, key, reason)

    if not key.startswith(settings.incoming_prefix):
        return skip(f"outside the drop folder {settings.incoming_prefix}")
    if key.endswith("/"):
        return skip("a folder marker, not a file")
    if size == 0:
        return skip("empty object (0 bytes)")
    name = key.rsplit("/", 1)[-1].lower()
    found = next((f for f in FORMATS if name.endswith(f.suffix) and len(name) > len(f.suffix)), None)
    if found is None:
        known = ", ".join(f.suffix for f in FORMATS)
        return skip(f"not a claims file: the name does not end with {known}")
    # The refusal note's URI counts too: every file that can be refused can be told why.
    uris = (*_uris(bucket, key, settings), refusal_note_uri(bucket, key, settings))
    if max(len(uri) for uri in uris) > _S3_URI_MAX:
        return skip(f"key too long: SageMaker takes S3 URIs of at most {_S3_URI_MAX} characters")
    if found.split_type == "None" and size is not None and size > settings.max_payload_mb * _MB:
        # An unsplit file is one request to the container; SageMaker fails the job if it is larger.
        # A claims file by its name that cannot be scored: refused, so its sender gets an answer.
        return NotAClaimsFile(
            bucket,
            key,
            f"{found.suffix} file of {size / _MB:.1f} MB exceeds the {settings.max_payload_mb} MB payload "
            "limit of an unsplit file; drop it as .csv or .jsonl",
            refused=True,
        )
    return found


def _uris(bucket: str, key: str, settings: BatchSettings) -> tuple[str, str, str]:
    """The input object, and the scored and rejected folders that keep its path below the drop folder."""
    relative = key[len(settings.incoming_prefix) :]
    return (
        s3_uri(bucket, key),
        s3_uri(bucket, f"{settings.scored_prefix}{relative}/"),
        s3_uri(bucket, f"{settings.rejected_prefix}{relative}/"),
    )


# ---------------------------------------------------------------------------------------------
# A refused file's answer: a note beside where its rejected rows would have gone.


def refusal_note_uri(bucket: str, key: str, settings: BatchSettings) -> str:
    """Where the sender of a refused ``key`` finds why: ``incoming/2026/11/a.csv`` is answered in
    ``rejected/2026/11/a.csv/refused.json``, the folder a job would have written its rejected rows to.
    One note per key: a later refusal of the same key replaces it (the bucket keeps the versions)."""
    return _uris(bucket, key, settings)[2] + REFUSAL_NOTE


def refusal_note(refused: NotAClaimsFile, version_id: str | None, *, at: dt.datetime) -> dict[str, Any]:
    """The note's content. Its fields are the drop folder's where they mean the same: ``file`` as in
    a summary, ``state`` and ``reason`` as in its ledger (whose ``failed/<name>.reason.txt`` holds the
    reason); ``source`` and ``version_id`` name the very object version refused, and ``spec`` the spec
    its header was checked against."""
    note: dict[str, Any] = {
        "file": refused.key.rsplit("/", 1)[-1],
        "source": refused.uri,
        "version_id": version_id,
        "state": "refused",
        "reason": refused.reason,
        "refused_at": at.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "kept": "the file stays where it was dropped; drop a corrected file to score it",
    }
    if refused.spec is not None:
        note["spec"] = {"name": refused.spec.name, "version": refused.spec.version}
    return note


def write_refusal_note(
    store: ArtifactStore,
    refused: NotAClaimsFile,
    version_id: str | None,
    *,
    settings: BatchSettings,
    at: dt.datetime,
) -> str:
    """Write the note for ``refused``; its URI. Raises :class:`TransformJobError` when it cannot be
    written now (the invocation then fails and Lambda retries it: a sender must get an answer)."""
    uri = refusal_note_uri(refused.bucket, refused.key, settings)
    try:
        store.write_json(uri, refusal_note(refused, version_id, at=at))
    except Exception as error:  # the store's own errors (botocore's in AWS): all mean "not written"
        raise TransformJobError(f"could not write the refusal note {uri}: {error}") from error
    return uri


# ---------------------------------------------------------------------------------------------
# Whose spec a CSV's header is checked against: the serving model's.


@dataclass(frozen=True)
class ServingSpec:
    spec: FeatureSpec
    published_at: str | None  # the URI it was read from; None: the default claims spec stood in


def serving_spec(store: ArtifactStore, uri: str | None) -> ServingSpec:
    """The feature spec of the model that serves, which the deploy step publishes at ``uri``; the
    default claims spec when none is published yet (no model deployed) or no ``uri`` is configured
    (outside Lambda). Raises :class:`TransformJobError` when it cannot be read now, or is no spec: a
    header is never checked against a spec that may not be the serving model's."""
    if uri is None:
        return ServingSpec(_claims_spec(), None)
    try:
        body = store.read_bytes(uri)
    except FileNotFoundError:
        return ServingSpec(_claims_spec(), None)
    except Exception as error:  # the store's own errors (botocore's in AWS): retry later
        raise TransformJobError(f"could not read the serving model's spec {uri}: {error}") from error
    from pydantic import ValidationError

    from shared.feature_spec import FeatureSpec

    try:
        return ServingSpec(FeatureSpec.model_validate_json(body), uri)
    except ValidationError as error:
        raise TransformJobError(f"{uri} is not a feature spec: {error}") from None


# ---------------------------------------------------------------------------------------------
# A CSV's header: read by the trigger, passed to the job, honoured by the inference script.


@functools.cache
def _claims_spec() -> FeatureSpec:
    from shared.feature_spec import claims_spec

    return claims_spec()


def csv_header_columns(first_line: bytes, spec: FeatureSpec, *, whole_file: bool = True) -> list[str] | None:
    """The columns a CSV's first line names, or None when it is a data row (the file has no header and
    is read in the spec's order): it names no spec column and either has the spec's number of columns
    or holds a value no header would (an empty cell, a number, a repeat). Raises
    :class:`ClaimsHeaderError` for a header that cannot be read, repeats a column, or does not fit the
    spec (:func:`columns_mismatch`: a required column missing, or mostly columns the spec does not
    have, as a file for another spec would be), so such a file fails once, before any row is read.
    One rule for the drop folder's file reader (``shared.ml.batch_scoring.csv_header``) and the AWS
    trigger. ``whole_file=False`` (a transform's mini-batch, whose first line may be any row of a
    file the trigger checked): only a line naming a spec column is a header, so a malformed row is
    never taken for another spec's header and is rejected alone."""
    try:
        text, not_utf8 = first_line.decode("utf-8"), None
    except UnicodeDecodeError as error:
        text = first_line.decode("utf-8", errors="backslashreplace")
        not_utf8 = f"not UTF-8: invalid byte at position {error.start + 1} of the line"
    cells = _csv_cells(text)
    if cells is None:
        return None
    known = {c.name for c in spec.columns} | {spec.target.column}
    header = [c.strip() for c in cells]
    if not any(c in known for c in header):
        headerless_width = sum(1 for c in spec.columns if c.role != "ignore")  # StrEnum: equal to text
        if not whole_file or not_utf8 or len(header) == headerless_width or not _reads_as_names(header):
            return None
    if not_utf8:
        raise ClaimsHeaderError(f"the header line cannot be read: {not_utf8}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ClaimsHeaderError(f"the header repeats columns: {', '.join(repeated)}")
    mismatch = columns_mismatch(header, spec)
    if mismatch:
        raise ClaimsHeaderError(mismatch)
    return header


NAMES_SHOWN: Final = 15  # columns named in a mismatch message before "and N more"


def columns_mismatch(
    columns: Sequence[str], spec: FeatureSpec, *, what: str = "header", lenient: bool = False
) -> str | None:
    """Why a file whose columns (``what``: its header, a Parquet file's schema, ...) are ``columns``
    is not a file for ``spec``, or None when it is. It is not when it lacks a required column, or when
    most of its columns are unknown to the spec (a file for another spec); a few unknown columns are
    fine (they are reported by validation, not fatal). ``lenient`` (the fields of JSON lines, where a
    row lacking a field is rejected alone): only when both hold. The message names the missing and
    the unexpected columns."""
    known = {c.name for c in spec.columns} | {spec.target.column}
    present = set(columns)
    unexpected = [c for c in columns if c not in known]
    required = [c.name for c in spec.columns if c.required and c.name not in present]
    mostly_unknown = len(unexpected) * 2 > len(columns)
    if lenient and not (mostly_unknown and required):
        return None
    if mostly_unknown:  # name everything that differs
        absent = [c.name for c in spec.columns if not c.required and c.name not in present]
        parts = [
            f"the {what} does not fit spec {spec.name!r}: {len(unexpected)} of its {len(columns)} "
            "columns are not in the spec (a file for another spec?)"
        ]
        if required:
            parts.append(f"missing required columns: {_names(required)}")
        if absent:
            parts.append(f"missing optional columns: {_names(absent)}")
        parts.append(f"unexpected columns: {_names(unexpected)}")
        return "; ".join(parts)
    if required:
        extra = f"; unexpected columns: {_names(unexpected)}" if unexpected else ""
        return f"the {what} lacks required columns: {_names(required)}{extra}"
    return None


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def _reads_as_names(cells: Sequence[str]) -> bool:
    """Whether a line's cells could be a header's names: none empty, none a number, no repeats."""
    if any(not cell for cell in cells) or len(set(cells)) != len(cells):
        return False
    for cell in cells:
        try:
            float(cell)
        except ValueError:
            continue
        return False
    return True


def _csv_cells(text: str) -> list[str] | None:
    """One line's cells (a BOM and the line end dropped), or None when its quoting is broken."""
    try:
        return next(csv.reader((text.rstrip("\r\n").lstrip("\ufeff"),), strict=True), [])
    except csv.Error:
        return None


# How the first bytes of a file that is not UTF-8 text usually begin, and what to tell its sender.
_NOT_TEXT_SIGNATURES: Final = (
    (b"\x00\x00\xfe\xff", "UTF-32 text, not UTF-8: save it as UTF-8"),
    (b"\xff\xfe\x00\x00", "UTF-32 text, not UTF-8: save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text, not UTF-8: save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text, not UTF-8: save it as UTF-8"),
    (b"PK\x03\x04", "a ZIP archive (an Excel workbook?): export the sheet as CSV"),
    (b"\x1f\x8b", "gzip-compressed: unpack it first"),
    (b"PAR1", "a Parquet file: name it .parquet"),
    (b"%PDF", "a PDF document"),
)


def not_text_reason(head: bytes) -> str | None:
    """Why a file whose first bytes are ``head`` is not a text file at all (None when it may be):
    such a file goes to failed/ whole, where a text file's unreadable lines are rejected one by one."""
    for signature, reason in _NOT_TEXT_SIGNATURES:
        if head.startswith(signature):
            return f"not a text file: {reason}"
    if b"\x00" in head:
        return "not a text file: it holds NUL bytes (binary data)"
    return None


def is_header_line(line: bytes, columns: Sequence[str]) -> bool:
    """Whether ``line`` is the header that declared ``columns`` (how a mini-batch holding it is told)."""
    try:
        cells = _csv_cells(line.decode("utf-8"))
    except UnicodeDecodeError:
        return False
    return cells is not None and [c.strip() for c in cells] == list(columns)


def leading_line(head: bytes, *, whole: bool) -> bytes:
    """The first line of the object whose first bytes are ``head`` (``whole``: they are all of it)."""
    end = head.find(b"\n")
    if end >= 0:
        return head[:end]
    if whole:
        return head
    raise ClaimsHeaderError(f"no line end in its first {len(head) // 1024} KB: too long for a header")


def csv_columns_value(columns: Sequence[str]) -> str | None:
    """The environment value that passes ``columns`` to the job; None when it would be too long."""
    value = json.dumps(list(columns), ensure_ascii=False, separators=(",", ":"))
    return value if len(value) <= ENV_VALUE_MAX else None


def declared_csv_columns(environ: Mapping[str, str]) -> list[str] | None:
    """The CSV column order the trigger passed to this job, or None (no header: the spec's order).
    A value that is not a JSON array of names is a bug of ours: it fails loudly, never mis-scores."""
    raw = environ.get(CSV_COLUMNS_ENV, "").strip()
    if not raw:
        return None
    try:
        columns = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"{CSV_COLUMNS_ENV} is not JSON: {error}") from None
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"{CSV_COLUMNS_ENV} must be a JSON array of column names, not {raw[:200]!r}")
    return columns


def inspect_claims_file(
    bucket: str,
    key: str,
    size: int | None,
    version_id: str | None,
    *,
    settings: BatchSettings,
    heads: ObjectHeadReader,
    spec: FeatureSpec | Callable[[], FeatureSpec] | None = None,
) -> ClaimsFile | NotAClaimsFile:
    """:func:`claims_format`, then, for a CSV, its header checked against ``spec`` (the claim schema by
    default; a callable is called only for a CSV, so other drops never load a spec). Raises
    :class:`shared.ports.TransformJobError` when the header or the spec cannot be read now."""
    found = claims_format(bucket, key, size, settings=settings)
    if isinstance(found, NotAClaimsFile):
        return found
    if found != CSV:  # JSON Lines name their fields on every line; Parquet carries its schema
        return ClaimsFile(found)

    try:
        head = heads.read_head(bucket, key, version_id, HEADER_READ_BYTES)
    except FileNotFoundError:
        return NotAClaimsFile(bucket, key, "deleted before its header could be read")
    checked = _resolved(spec)

    def refuse(reason: str) -> NotAClaimsFile:
        return NotAClaimsFile(bucket, key, f"not a claims file: {reason}", refused=True, spec=checked)

    # Fewer bytes than asked for, or as many as the object has: the head is the whole object.
    whole = len(head) < HEADER_READ_BYTES or (size is not None and len(head) >= size)
    binary = not_text_reason(head)
    if binary is not None:
        return refuse(binary)
    try:
        line = leading_line(head, whole=whole)
        line.decode("utf-8")  # a first line in another encoding (UTF-16, Latin-1) is no claims header
        columns = csv_header_columns(line, checked)
    except UnicodeDecodeError as error:
        return refuse(f"its first line is not UTF-8 text (invalid byte at position {error.start + 1})")
    except ClaimsHeaderError as error:
        return refuse(str(error))
    if columns is None:
        return ClaimsFile(found)  # no header: every mini-batch is in the spec's order, as the job assumes
    if csv_columns_value(columns) is None:
        return refuse(
            f"its header of {len(columns)} columns is longer than a transform job's environment can "
            f"carry ({ENV_VALUE_MAX} characters)"
        )
    return ClaimsFile(found, tuple(columns))


def _resolved(spec: FeatureSpec | Callable[[], FeatureSpec] | None) -> FeatureSpec:
    if spec is None:
        return _claims_spec()
    return spec() if callable(spec) else spec


def plan_transform_job(
    bucket: str,
    key: str,
    version_id: str | None,
    *,
    settings: BatchSettings,
    model_name: str,
    size: int | None = None,
    csv_columns: Sequence[str] | None = None,
) -> TransformJobSpec | NotAClaimsFile:
    """The transform job that scores this object version with ``model_name``, or why there is none.

    ``key`` is the decoded S3 key; outputs keep its path below the drop folder, so
    ``incoming/2026/11/a.csv`` is scored into ``scored/2026/11/a.csv/`` and its rejected rows go to
    ``rejected/2026/11/a.csv/``. ``csv_columns`` is a CSV's header (:func:`inspect_claims_file`),
    which the job's container needs to read the mini-batches after the first.
    """
    found = claims_format(bucket, key, size, settings=settings)
    if isinstance(found, NotAClaimsFile):
        return found
    source, scored, rejected = _uris(bucket, key, settings)
    environment = {REJECTED_URI_ENV: rejected}
    if csv_columns:
        value = csv_columns_value(csv_columns)
        if value is None:
            return NotAClaimsFile(bucket, key, f"a header over {ENV_VALUE_MAX} characters", refused=True)
        environment[CSV_COLUMNS_ENV] = value
    return TransformJobSpec(
        job_name=job_name(bucket, key, version_id),
        input_uri=source,
        content_type=found.content_type,
        split_type=found.split_type,
        output_uri=scored,
        rejected_uri=rejected,
        accept=found.accept,
        assemble_with="Line",
        instance_type=settings.instance_type,
        instance_count=settings.instance_count,
        model_name=model_name,
        max_payload_mb=settings.max_payload_mb,
        kms_key_id=settings.kms_key_id,
        max_concurrent_transforms=settings.max_concurrent_transforms,
        line_batch_strategy=settings.batch_strategy,
        environment=environment,
        tags={"source-object": tag_value(source), "source-version": tag_value(version_id or "none")},
    )


def job_name(bucket: str, key: str, version_id: str | None) -> str:
    """Same object version, same name: a redelivered event cannot start a second job under a new name."""
    identity = json.dumps([bucket, key, version_id], ensure_ascii=False)  # unambiguous, unlike joining
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{JOB_NAME_PREFIX}{_slug(key)}-{digest}"


def _slug(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    stem = next((name[: -len(f.suffix)] for f in FORMATS if name.lower().endswith(f.suffix)), name)
    # Accents fold to ASCII (é → e); everything else outside [a-z0-9] becomes one hyphen.
    ascii_only = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only.lower()).strip("-")[:_SLUG_MAX].rstrip("-")
    return slug or "file"


def tag_value(text: str) -> str:
    """SageMaker tag values allow only letters, numbers, spaces and ``_.:/=+-@``, up to 256 characters."""
    allowed = "".join(c if c in "_.:/=+-@" or unicodedata.category(c)[0] in "LZN" else "_" for c in text)
    return allowed[:_TAG_VALUE_MAX]
