"""Object head reader: the first bytes of a dropped file, by one ranged S3 ``GetObject``.

The batch trigger reads a CSV's header with it (:func:`shared.batch_jobs.inspect_claims_file`):
never the whole object, whatever its size.
"""

from __future__ import annotations

from typing import Any

from shared.ports import TransformJobError

# S3 names a missing key or version so (botocore's s3 model lists NoSuchKey for GetObject; a
# versioned GET of a deleted version answers NoSuchVersion; a HEAD-style miss is a bare 404).
_GONE_CODES = frozenset({"NoSuchKey", "NoSuchVersion", "404"})


class S3ObjectHeads:
    def __init__(self, client: Any | None = None) -> None:
        if client is None:
            import boto3  # imported here: only the AWS wiring needs it

            client = boto3.client("s3")
        self._client = client

    def read_head(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        # GetObject's Range takes one HTTP byte range (RFC 9110), both ends inclusive (botocore's s3 model).
        request: dict[str, Any] = {"Bucket": bucket, "Key": key, "Range": f"bytes=0-{limit - 1}"}
        if version_id:
            request["VersionId"] = version_id  # the version the event announced, not a newer one
        try:
            answer = self._client.get_object(**request)
            with answer["Body"] as body:
                return bytes(body.read(limit))  # an endpoint that ignored the range is still read no further
        except ClientError as error:
            details = error.response.get("Error", {})
            code = str(details.get("Code", ""))
            if code in _GONE_CODES:
                raise FileNotFoundError(f"s3://{bucket}/{key} is gone ({code})") from None
            if code == "InvalidRange":  # S3's 416 for a range that starts past the end: an empty object
                return b""
            raise TransformJobError(
                f"could not read the start of s3://{bucket}/{key}: {code}: {details.get('Message')}"
            ) from None
        except BotoCoreError as error:
            raise TransformJobError(f"could not read the start of s3://{bucket}/{key}: {error}") from None
