"""What the lake job reads in AWS (:mod:`shared.transform_results`): the transform job's description
(SageMaker ``DescribeTransformJob`` and ``ListTags``) and its objects (S3 ``ListObjectsV2`` and
``GetObject``, a version when given)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final

from shared.transform_results import TransformJobRecord, TransformResultsError

# S3 names a missing key or version so (botocore's s3 model: NoSuchKey; a versioned GET: NoSuchVersion).
_GONE_CODES: Final = frozenset({"NoSuchKey", "NoSuchVersion", "404"})
_COPY_BLOCK: Final = 8 * 1024 * 1024


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise TransformResultsError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


class SageMakerTransformJobs:
    def __init__(self, client: Any | None = None) -> None:
        if client is None:
            import boto3  # imported here: only the AWS wiring needs it

            client = boto3.client("sagemaker")
        self._client = client

    def describe(self, name: str) -> TransformJobRecord:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            job = self._client.describe_transform_job(TransformJobName=name)
            tags: dict[str, str] = {}
            pages = self._client.get_paginator("list_tags").paginate(ResourceArn=job["TransformJobArn"])
            for page in pages:
                tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        except (ClientError, BotoCoreError) as error:
            raise TransformResultsError(f"could not describe the transform job {name}: {error}") from None
        transform_input, output = job["TransformInput"], job["TransformOutput"]
        return TransformJobRecord(
            name=job["TransformJobName"],
            status=job["TransformJobStatus"],
            input_uri=transform_input["DataSource"]["S3DataSource"]["S3Uri"],
            output_uri=output["S3OutputPath"],
            content_type=transform_input.get("ContentType", ""),
            accept=output.get("Accept", ""),
            environment=dict(job.get("Environment") or {}),
            tags=tags,
            ended_at=job.get("TransformEndTime"),
        )


class S3ObjectFiles:
    def __init__(self, client: Any | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self._client = client

    def keys_under(self, prefix_uri: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, prefix = _split(prefix_uri)
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [f"s3://{bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as error:
            raise TransformResultsError(f"could not list {prefix_uri}: {error}") from None

    def download(self, uri: str, version_id: str | None, target: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = _split(uri)
        request: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            request["VersionId"] = version_id  # the version the transform scored, not a newer one
        try:
            answer = self._client.get_object(**request)
            with answer["Body"] as body, target.open("wb") as local:
                shutil.copyfileobj(body, local, _COPY_BLOCK)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in _GONE_CODES:
                version = f" (version {version_id})" if version_id else ""
                raise FileNotFoundError(f"{uri}{version} is gone ({code})") from None
            raise TransformResultsError(f"could not read {uri}: {error}") from None
        except BotoCoreError as error:
            raise TransformResultsError(f"could not read {uri}: {error}") from None
