"""Processing job launcher: SageMaker ``CreateProcessingJob`` for the jobs started outside the state
machine (the hourly drift job)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.adapters.transform_jobs import is_duplicate_name
from shared.ports import TransformJobError


class ProcessingJobError(TransformJobError):
    """A processing job could not be started."""


class SageMakerProcessingLauncher:
    def __init__(self, client: Any | None = None) -> None:
        if client is None:
            import boto3  # imported here: only the AWS wiring needs it

            client = boto3.client("sagemaker")
        self._client = client

    def start(self, request: Mapping[str, Any]) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        name = str(request["ProcessingJobName"])
        try:
            answer = self._client.create_processing_job(**request)
        except ClientError as error:
            if is_duplicate_name(error, name):
                return name  # the same hour was started already: the job stands
            details = error.response.get("Error", {})
            raise ProcessingJobError(
                f"CreateProcessingJob {name} failed: {details.get('Code')}: {details.get('Message')}"
            ) from None
        except BotoCoreError as error:
            raise ProcessingJobError(f"CreateProcessingJob {name} failed: {error}") from None
        return str(answer["ProcessingJobArn"])
