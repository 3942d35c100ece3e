"""The drop-folder domain: which objects are claims files, and the transform job each one gets."""

from __future__ import annotations

import pytest

from shared.batch_jobs import (
    JOB_NAME_PATTERN,
    REJECTED_URI_ENV,
    BatchSettings,
    NotAClaimsFile,
    TransformJobSpec,
    claims_format,
    job_name,
    plan_transform_job,
    tag_value,
)

SETTINGS = BatchSettings()
BUCKET = "claims-drop"


def plan(key: str, version: str | None = "v1", size: int | None = 100, **kwargs: object) -> TransformJobSpec:
    settings = kwargs.pop("settings", SETTINGS)
    assert isinstance(settings, BatchSettings)
    result = plan_transform_job(
        BUCKET, key, version, settings=settings, model_name="claims-model-7", size=size
    )
    assert isinstance(result, TransformJobSpec), result
    return result


def skipped(key: str, size: int | None = 100, settings: BatchSettings = SETTINGS) -> str:
    result = plan_transform_job(BUCKET, key, "v1", settings=settings, model_name="m", size=size)
    assert isinstance(result, NotAClaimsFile), result
    assert result.uri == f"s3://{BUCKET}/{key}"
    return result.reason


@pytest.mark.parametrize(
    ("key", "content_type", "split", "accept", "strategy"),
    [
        ("incoming/a.csv", "text/csv", "Line", "text/csv", "MultiRecord"),
        ("incoming/a.jsonl", "application/jsonlines", "Line", "application/jsonlines", "MultiRecord"),
        ("incoming/a.json", "application/jsonlines", "Line", "application/jsonlines", "MultiRecord"),
        ("incoming/a.parquet", "application/x-parquet", "None", "application/jsonlines", "SingleRecord"),
    ],
)
def test_each_suffix_has_its_content_type_and_split(
    key: str, content_type: str, split: str, accept: str, strategy: str
) -> None:
    spec = plan(key)
    assert (spec.content_type, spec.split_type, spec.accept) == (content_type, split, accept)
    assert spec.assemble_with == "Line"
    assert spec.batch_strategy == strategy


@pytest.mark.parametrize(
    "key", ["incoming/A.CSV", "incoming/b.JsonL", "incoming/c.Json", "incoming/d.PARQUET"]
)
def test_suffixes_are_case_insensitive(key: str) -> None:
    assert plan(key).input_uri == f"s3://{BUCKET}/{key}"  # the key itself keeps its case


def test_outputs_keep_the_path_below_the_drop_folder() -> None:
    spec = plan("incoming/2026/11/claims a.csv")
    assert spec.input_uri == "s3://claims-drop/incoming/2026/11/claims a.csv"
    assert spec.output_uri == "s3://claims-drop/scored/2026/11/claims a.csv/"
    assert spec.rejected_uri == "s3://claims-drop/rejected/2026/11/claims a.csv/"
    assert spec.environment == {REJECTED_URI_ENV: spec.rejected_uri}


def test_the_spec_carries_the_settings_and_the_model() -> None:
    settings = BatchSettings(
        incoming_prefix="drop/in/",
        scored_prefix="drop/out/",
        rejected_prefix="drop/bad/",
        instance_type="ml.c5.xlarge",
        instance_count=3,
        max_payload_mb=20,
        kms_key_id="alias/claims-data",
    )
    spec = plan("drop/in/x/y.jsonl", settings=settings)
    assert spec.output_uri == "s3://claims-drop/drop/out/x/y.jsonl/"
    assert spec.rejected_uri == "s3://claims-drop/drop/bad/x/y.jsonl/"
    assert (spec.instance_type, spec.instance_count, spec.max_payload_mb) == ("ml.c5.xlarge", 3, 20)
    assert spec.kms_key_id == "alias/claims-data"
    assert spec.model_name == "claims-model-7"
    assert plan("incoming/a.csv").kms_key_id is None


def test_tags_name_the_source_object_and_version() -> None:
    spec = plan("incoming/2026/claims.csv", version="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY")
    assert spec.tags == {
        "source-object": "s3://claims-drop/incoming/2026/claims.csv",
        "source-version": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
    }


def test_tag_values_keep_to_what_sagemaker_allows() -> None:
    spec = plan("incoming/" + "(a&b)#1, é" * 60 + ".csv")
    value = spec.tags["source-object"]
    assert len(value) == 256
    assert value.startswith("s3://claims-drop/incoming/_a_b__1_ é")
    assert tag_value("a\nb;c=d+e@f:g") == "a_b_c=d+e@f:g"


@pytest.mark.parametrize(
    ("key", "size", "reason"),
    [
        (
            "incoming/readme.txt",
            10,
            "not a claims file: the name does not end with .csv, .jsonl, .json, .parquet",
        ),
        ("incoming/claims.csv.gz", 10, "not a claims file"),
        ("incoming/.csv", 10, "not a claims file"),
        ("incoming/2026/", 0, "a folder marker, not a file"),
        ("incoming/2026/", None, "a folder marker, not a file"),
        ("incoming/empty.csv", 0, "empty object (0 bytes)"),
        ("scored/a.csv/a.csv.out", 10, "outside the drop folder incoming/"),
        ("Incoming/a.csv", 10, "outside the drop folder incoming/"),  # S3 keys are case-sensitive
        ("incoming-old/a.csv", 10, "outside the drop folder incoming/"),
        ("incoming/big.parquet", 7 * 1024 * 1024, "exceeds the 6 MB payload limit"),
        ("incoming/" + "x" * 1010 + ".csv", 10, "key too long"),
    ],
)
def test_what_is_not_a_claims_file_and_why(key: str, size: int | None, reason: str) -> None:
    assert reason in skipped(key, size)


def test_the_pre_check_agrees_with_the_plan() -> None:
    assert claims_format(BUCKET, "incoming/a.csv", 5, settings=SETTINGS) == claims_format(
        BUCKET, "incoming/b.CSV", None, settings=SETTINGS
    )
    assert isinstance(claims_format(BUCKET, "incoming/a.txt", 5, settings=SETTINGS), NotAClaimsFile)


def test_a_large_csv_is_fine_because_it_is_split_by_line() -> None:
    assert plan("incoming/big.csv", size=5 * 1024**3).split_type == "Line"


NASTY_KEYS = [
    "incoming/2026/11/claims a.csv",
    "incoming/2026/11/claims batch+1.csv",
    "incoming/ÄÖÜ ß é.jsonl",
    "incoming/日本語のクレーム.json",
    "incoming/🚗💥.parquet",
    "incoming/---.csv",
    "incoming/-leading and trailing-.csv",
    "incoming/a" * 40 + ".csv",
    "incoming/" + "é" * 500 + ".csv",
    "incoming/" + "Z" * 1000 + ".csv",
    "incoming/UPPER_case.Name.with.dots.CSV",
    "incoming/tab\there\nnewline.csv",
    "incoming/%2F encoded %20.csv",
    "incoming/no-suffix",
    "",
]


@pytest.mark.parametrize("key", NASTY_KEYS)
@pytest.mark.parametrize("version", ["v1", None, "null", "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"])
def test_job_names_are_valid_for_any_key(key: str, version: str | None) -> None:
    name = job_name(BUCKET, key, version)  # even for keys too long to plan a job for
    assert JOB_NAME_PATTERN.fullmatch(name), name
    assert len(name) <= 63
    assert name.startswith("claims-batch-")


def test_job_names_read_like_the_file() -> None:
    assert plan("incoming/2026/11/Claims Batch+1.csv").job_name.startswith("claims-batch-claims-batch-1-")
    assert plan("incoming/Déclarations été.jsonl").job_name.startswith("claims-batch-declarations-ete-")
    assert plan("incoming/日本語.csv").job_name.startswith("claims-batch-file-")


def test_job_names_are_deterministic_per_object_version() -> None:
    first = job_name(BUCKET, "incoming/a.csv", "v1")
    assert first == job_name(BUCKET, "incoming/a.csv", "v1") == plan("incoming/a.csv", "v1").job_name
    others = {
        job_name(BUCKET, "incoming/a.csv", "v2"),
        job_name(BUCKET, "incoming/a.csv", None),
        job_name("other-bucket", "incoming/a.csv", "v1"),
        job_name(BUCKET, "incoming/x/a.csv", "v1"),
        job_name(BUCKET, "incoming/A.csv", "v1"),
    }
    assert first not in others and len(others) == 5


def test_long_names_with_one_stem_still_differ_by_their_hash() -> None:
    stem = "incoming/" + "q" * 200
    assert job_name(BUCKET, stem + "1.csv", "v") != job_name(BUCKET, stem + "2.csv", "v")


def test_settings_from_an_empty_environment_are_the_defaults() -> None:
    assert BatchSettings.from_env({}) == BatchSettings()
    assert BatchSettings() == BatchSettings("incoming/", "scored/", "rejected/", "ml.m5.large", 1, 6, None)


def test_settings_from_the_environment() -> None:
    settings = BatchSettings.from_env(
        {
            "INCOMING_PREFIX": "drop",
            "SCORED_PREFIX": "out/scored/",
            "REJECTED_PREFIX": "out/rejected",
            "TRANSFORM_INSTANCE_TYPE": "ml.c5.2xlarge",
            "TRANSFORM_INSTANCE_COUNT": "2",
            "TRANSFORM_MAX_PAYLOAD_MB": " 50 ",
            "DATA_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/abc",
        }
    )
    assert settings == BatchSettings(
        "drop/",
        "out/scored/",
        "out/rejected/",
        "ml.c5.2xlarge",
        2,
        50,
        "arn:aws:kms:eu-west-1:123456789012:key/abc",
    )
    assert BatchSettings.from_env({"DATA_KMS_KEY_ID": "", "TRANSFORM_INSTANCE_COUNT": ""}) == BatchSettings()


def test_the_stages_concurrency_and_strategy_reach_the_job() -> None:
    """SageMaker caps MaxConcurrentTransforms times MaxPayloadInMB at 100 MB (CreateTransformJob's page):
    16 times 6 fits. The strategy applies to line-split files; a Parquet file is one record."""
    settings = BatchSettings.from_env(
        {"TRANSFORM_MAX_CONCURRENT": "16", "TRANSFORM_BATCH_STRATEGY": "SingleRecord"}
    )
    assert (settings.max_concurrent_transforms, settings.batch_strategy) == (16, "SingleRecord")
    line = plan("incoming/a.csv", settings=settings)
    assert (line.max_concurrent_transforms, line.batch_strategy) == (16, "SingleRecord")
    assert plan(
        "incoming/a.parquet", settings=BatchSettings(batch_strategy="MultiRecord")
    ).batch_strategy == ("SingleRecord")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRANSFORM_INSTANCE_COUNT": "two"}, "TRANSFORM_INSTANCE_COUNT must be a whole number, not 'two'"),
        ({"TRANSFORM_INSTANCE_COUNT": "0"}, "TRANSFORM_INSTANCE_COUNT must be at least 1"),
        ({"TRANSFORM_MAX_PAYLOAD_MB": "6.5"}, "TRANSFORM_MAX_PAYLOAD_MB must be a whole number"),
        ({"TRANSFORM_MAX_PAYLOAD_MB": "101"}, "TRANSFORM_MAX_PAYLOAD_MB must be 1 to 100"),
        ({"TRANSFORM_MAX_PAYLOAD_MB": "0"}, "TRANSFORM_MAX_PAYLOAD_MB must be 1 to 100"),
        ({"TRANSFORM_INSTANCE_TYPE": "m5.large"}, "TRANSFORM_INSTANCE_TYPE must look like ml.m5.large"),
        ({"TRANSFORM_MAX_CONCURRENT": "0"}, "TRANSFORM_MAX_CONCURRENT must be at least 1"),
        (
            {"TRANSFORM_MAX_CONCURRENT": "17", "TRANSFORM_MAX_PAYLOAD_MB": "6"},
            "TRANSFORM_MAX_CONCURRENT times TRANSFORM_MAX_PAYLOAD_MB is 102 MB",
        ),
        ({"TRANSFORM_BATCH_STRATEGY": "Lines"}, "TRANSFORM_BATCH_STRATEGY must be one of MultiRecord"),
        ({"INCOMING_PREFIX": "/incoming/"}, "INCOMING_PREFIX must be a folder"),
        ({"SCORED_PREFIX": "incoming/scored/"}, "SCORED_PREFIX 'incoming/scored/' overlaps INCOMING_PREFIX"),
        ({"REJECTED_PREFIX": "incoming"}, "REJECTED_PREFIX 'incoming/' overlaps INCOMING_PREFIX"),
        ({"INCOMING_PREFIX": "scored/in"}, "SCORED_PREFIX 'scored/' overlaps INCOMING_PREFIX 'scored/in/'"),
    ],
)
def test_bad_settings_say_which_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        BatchSettings.from_env(env)


def test_the_spec_is_frozen() -> None:
    spec = plan("incoming/a.csv")
    with pytest.raises(AttributeError):
        spec.job_name = "other"  # type: ignore[misc]
