"""The batch trigger reads a CSV's header before it starts a job (issue 11, point 12): a bounded read,
checked against the claim schema, and the column order passed to the job's container."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto import mock_aws

from shared.adapters.object_heads import S3ObjectHeads
from shared.batch_jobs import (
    CSV_COLUMNS_ENV,
    ENV_VALUE_MAX,
    HEADER_READ_BYTES,
    REJECTED_URI_ENV,
    BatchSettings,
    ClaimsFile,
    NotAClaimsFile,
    TransformJobSpec,
    declared_csv_columns,
    inspect_claims_file,
    is_header_line,
    plan_transform_job,
)
from shared.feature_spec import claims_spec
from shared.ports import TransformJobError
from tests.aws_fakes import offline_credentials
from tests.factories import minimal_claim

BUCKET = "claims-drop"
SETTINGS = BatchSettings()
COLUMNS = list(minimal_claim())
SHUFFLED = [*reversed(COLUMNS), "incident_date", "description"]


@dataclass
class FakeHeads:
    """An object store holding one object; it records every read."""

    body: bytes
    reads: list[tuple[str, str, str | None, int]] = field(default_factory=list)

    def read_head(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        self.reads.append((bucket, key, version_id, limit))
        return self.body[:limit]


def inspect(body: bytes, key: str = "incoming/a.csv", size: int | None = None) -> tuple[Any, FakeHeads]:
    heads = FakeHeads(body)
    found = inspect_claims_file(
        BUCKET, key, len(body) if size is None else size, "v7", settings=SETTINGS, heads=heads
    )
    return found, heads


def refusal(body: bytes) -> str:
    found, _ = inspect(body)
    assert isinstance(found, NotAClaimsFile), found
    assert found.refused, "a claims file by its name, refused for its content"
    return found.reason


def test_a_csv_header_in_any_order_is_read_once_within_the_bound_and_kept() -> None:
    body = (",".join(SHUFFLED) + "\r\n" + "x," * 40 + "\n").encode() * 3000  # larger than the bound
    found, heads = inspect(body)
    assert found == ClaimsFile(found.format, tuple(SHUFFLED))
    assert heads.reads == [(BUCKET, "incoming/a.csv", "v7", HEADER_READ_BYTES)]
    assert HEADER_READ_BYTES == 64 * 1024


def test_a_header_with_a_byte_order_mark_and_spaces_is_read_as_its_names() -> None:
    found, _ = inspect(("\ufeff" + ", ".join(SHUFFLED) + "\n").encode())
    assert isinstance(found, ClaimsFile) and found.csv_columns == tuple(SHUFFLED)


def test_a_header_without_a_required_column_is_refused_naming_it() -> None:
    header = [c for c in SHUFFLED if c not in ("claim_amount", "location")]
    reason = refusal((",".join(header) + "\nCLM-1,1\n").encode())
    assert reason == "not a claims file: the header lacks required columns: claim_amount, location"


def test_a_header_that_repeats_a_column_is_refused() -> None:
    assert "repeats columns: claim_id" in refusal((",".join([*COLUMNS, "claim_id"]) + "\n").encode())


def test_a_first_line_longer_than_the_bound_is_not_a_header() -> None:
    body = (",".join(COLUMNS) + "," + "x" * HEADER_READ_BYTES + "\n").encode()
    assert refusal(body) == "not a claims file: no line end in its first 64 KB: too long for a header"


def test_a_first_line_that_is_not_utf8_is_refused() -> None:
    assert "not UTF-8" in refusal(",".join(COLUMNS).encode("utf-16"))
    assert "not UTF-8" in refusal((",".join(COLUMNS) + ",d\xe9tail\n").encode("latin-1"))


def test_a_header_too_long_for_the_jobs_environment_is_refused() -> None:
    # Every spec column and a few long extra ones (a header of mostly unknown columns is refused first).
    every = [c.name for c in claims_spec().columns]
    extra = [f"note_{i:02d}_{'x' * 1200}" for i in range(ENV_VALUE_MAX // 1000)]
    assert len(extra) < len(every)
    body = (",".join([*every, *extra]) + "\n").encode()
    assert len(body) < HEADER_READ_BYTES
    assert "longer than a transform job's environment can carry (10240" in refusal(body)


def test_a_one_line_file_without_a_line_end_is_its_header() -> None:
    found, _ = inspect(",".join(COLUMNS).encode())
    assert isinstance(found, ClaimsFile) and found.csv_columns == tuple(COLUMNS)


def test_a_csv_without_header_passes_no_columns_and_keeps_the_spec_order() -> None:
    found, _ = inspect(",".join(str(v) for v in minimal_claim().values()).encode() + b"\n")
    assert isinstance(found, ClaimsFile) and found.csv_columns is None


def test_other_formats_and_other_objects_are_not_read() -> None:
    for key in ("incoming/a.jsonl", "incoming/a.parquet", "incoming/readme.txt", "elsewhere/a.csv"):
        found, heads = inspect(b"not a header at all\n", key=key)
        assert heads.reads == [], key
        assert not (isinstance(found, NotAClaimsFile) and found.refused), key


def test_a_file_deleted_before_its_header_is_read_is_skipped_not_refused() -> None:
    class Gone:
        def read_head(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
            raise FileNotFoundError(key)

    found = inspect_claims_file(BUCKET, "incoming/a.csv", 10, None, settings=SETTINGS, heads=Gone())
    assert isinstance(found, NotAClaimsFile) and not found.refused
    assert found.reason == "deleted before its header could be read"


def test_the_job_carries_the_column_order_and_the_container_reads_it_back() -> None:
    plan = plan_transform_job(
        BUCKET, "incoming/a.csv", "v1", settings=SETTINGS, model_name="m", size=10, csv_columns=SHUFFLED
    )
    assert isinstance(plan, TransformJobSpec)
    assert set(plan.environment) == {REJECTED_URI_ENV, CSV_COLUMNS_ENV}
    assert json.loads(plan.environment[CSV_COLUMNS_ENV]) == SHUFFLED
    assert declared_csv_columns(plan.environment) == SHUFFLED
    without = plan_transform_job(BUCKET, "incoming/a.csv", "v1", settings=SETTINGS, model_name="m", size=10)
    assert isinstance(without, TransformJobSpec) and CSV_COLUMNS_ENV not in without.environment
    assert declared_csv_columns(without.environment) is None


@pytest.mark.parametrize("value", ["claim_id,claim_amount", "[]", '{"a": 1}', "[1, 2]"])
def test_a_malformed_column_variable_fails_loudly(value: str) -> None:
    with pytest.raises(ValueError, match=CSV_COLUMNS_ENV):
        declared_csv_columns({CSV_COLUMNS_ENV: value})


def test_the_header_line_is_told_by_equality_with_the_declared_columns() -> None:
    assert is_header_line(("\ufeff" + ",".join(SHUFFLED) + "\r").encode(), SHUFFLED)
    assert not is_header_line(",".join(COLUMNS).encode(), SHUFFLED)  # same names, another order
    assert not is_header_line(",".join(str(v) for v in minimal_claim().values()).encode(), COLUMNS)
    assert not is_header_line(b"\xff\xfe", COLUMNS)


# ---------------------------------------------------------------------------------------------
# The S3 adapter against moto: one ranged GET of the announced version.


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    offline_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def test_the_s3_reader_reads_only_the_first_bytes_of_the_announced_version(s3: Any) -> None:
    first = s3.put_object(Bucket=BUCKET, Key="incoming/a.csv", Body=b"a" * 5000)["VersionId"]
    s3.put_object(Bucket=BUCKET, Key="incoming/a.csv", Body=b"b" * 5000)
    heads = S3ObjectHeads(s3)
    assert heads.read_head(BUCKET, "incoming/a.csv", first, 100) == b"a" * 100
    assert heads.read_head(BUCKET, "incoming/a.csv", None, 100) == b"b" * 100
    assert heads.read_head(BUCKET, "incoming/a.csv", None, 10**6) == b"b" * 5000  # shorter than asked


def test_the_s3_reader_tells_a_missing_object_from_a_failure(s3: Any) -> None:
    heads = S3ObjectHeads(s3)
    with pytest.raises(FileNotFoundError, match=r"incoming/gone\.csv"):
        heads.read_head(BUCKET, "incoming/gone.csv", None, 100)
    with pytest.raises(TransformJobError, match=r"could not read the start of s3://nowhere/a\.csv"):
        heads.read_head("nowhere", "a.csv", None, 100)
