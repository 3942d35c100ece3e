"""Drop-folder batch scoring: which S3 objects are claims files, and the transform job each one gets.

Pure domain: no boto3 and no clock. The batch-trigger Lambda feeds it one S3 object (bucket, key,
version) and hands the resulting :class:`TransformJobSpec` to a :class:`shared.ports.TransformJobLauncher`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

REJECTED_URI_ENV = "CLAIMS_RISK_REJECTED_S3_URI"  # read by the inference script inside the container
JOB_NAME_PREFIX = "claims-batch-"
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # SageMaker's TransformJobName
_JOB_NAME_MAX = 63
_HASH_CHARS = 12  # 48 bits: a clash needs ~16 million files with the same slug
_SLUG_MAX = _JOB_NAME_MAX - len(JOB_NAME_PREFIX) - 1 - _HASH_CHARS
_S3_URI_MAX = 1024  # SageMaker's limit on S3Uri and S3OutputPath
_TAG_VALUE_MAX = 256
_MB = 1024 * 1024

SplitType = Literal["Line", "None"]


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
        if not 1 <= self.max_payload_mb <= 100:
            raise ValueError(
                f"TRANSFORM_MAX_PAYLOAD_MB must be 1 to 100 (SageMaker's limit), not {self.max_payload_mb}"
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

    @property
    def uri(self) -> str:
        return s3_uri(self.bucket, self.key)


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

    @property
    def batch_strategy(self) -> Literal["MultiRecord", "SingleRecord"]:
        # Line-split files go in mini-batches of many rows; an unsplit file is one record.
        return "MultiRecord" if self.split_type == "Line" else "SingleRecord"


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
    if found.split_type == "None" and size is not None and size > settings.max_payload_mb * _MB:
        # An unsplit file is one request to the container; SageMaker fails the job if it is larger.
        return skip(
            f"{found.suffix} file of {size / _MB:.1f} MB exceeds the {settings.max_payload_mb} MB payload "
            "limit of an unsplit file; drop it as .csv or .jsonl"
        )
    if max(len(uri) for uri in _uris(bucket, key, settings)) > _S3_URI_MAX:
        return skip(f"key too long: SageMaker takes S3 URIs of at most {_S3_URI_MAX} characters")
    return found


def _uris(bucket: str, key: str, settings: BatchSettings) -> tuple[str, str, str]:
    """The input object, and the scored and rejected folders that keep its path below the drop folder."""
    relative = key[len(settings.incoming_prefix) :]
    return (
        s3_uri(bucket, key),
        s3_uri(bucket, f"{settings.scored_prefix}{relative}/"),
        s3_uri(bucket, f"{settings.rejected_prefix}{relative}/"),
    )


def plan_transform_job(
    bucket: str,
    key: str,
    version_id: str | None,
    *,
    settings: BatchSettings,
    model_name: str,
    size: int | None = None,
) -> TransformJobSpec | NotAClaimsFile:
    """The transform job that scores this object version with ``model_name``, or why there is none.

    ``key`` is the decoded S3 key; outputs keep its path below the drop folder, so
    ``incoming/2026/11/a.csv`` is scored into ``scored/2026/11/a.csv/`` and its rejected rows go to
    ``rejected/2026/11/a.csv/``.
    """
    found = claims_format(bucket, key, size, settings=settings)
    if isinstance(found, NotAClaimsFile):
        return found
    source, scored, rejected = _uris(bucket, key, settings)
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
        environment={REJECTED_URI_ENV: rejected},
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
