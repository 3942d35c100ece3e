"""Transform job launcher: SageMaker ``CreateTransformJob`` with the model behind the serving endpoint."""

from __future__ import annotations

from typing import Any

from shared.batch_jobs import TransformJobSpec
from shared.ports import TransformJobError

# How SageMaker words a duplicate job name (ValidationException today; ResourceInUse elsewhere).
_DUPLICATE_CODES = frozenset({"ValidationException", "ResourceInUse"})
_DUPLICATE_PHRASES = ("already exists", "must be unique", "in use")


class SageMakerTransformLauncher:
    def __init__(self, client: Any | None = None) -> None:
        if client is None:
            import boto3  # imported here: only the AWS wiring needs it

            client = boto3.client("sagemaker")
        self._client = client

    def model_name(self, endpoint_name: str) -> str:
        """Endpoint → its config → the first variant's model, so batch scores as the API does."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            config_name = self._client.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
            config = self._client.describe_endpoint_config(EndpointConfigName=config_name)
        except (ClientError, BotoCoreError) as error:
            raise TransformJobError(f"no model found behind endpoint {endpoint_name}: {error}") from None
        variants = config.get("ProductionVariants") or []
        if not variants or not variants[0].get("ModelName"):
            raise TransformJobError(f"endpoint config {config_name} names no model")
        return str(variants[0]["ModelName"])

    def launch(self, spec: TransformJobSpec) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        output: dict[str, str] = {
            "S3OutputPath": spec.output_uri,
            "Accept": spec.accept,
            "AssembleWith": spec.assemble_with,
        }
        if spec.kms_key_id:
            output["KmsKeyId"] = spec.kms_key_id
        try:
            answer = self._client.create_transform_job(
                TransformJobName=spec.job_name,
                ModelName=spec.model_name,
                MaxPayloadInMB=spec.max_payload_mb,
                MaxConcurrentTransforms=spec.max_concurrent_transforms,
                BatchStrategy=spec.batch_strategy,
                Environment=dict(spec.environment),
                TransformInput={
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input_uri}},
                    "ContentType": spec.content_type,
                    "SplitType": spec.split_type,
                    "CompressionType": "None",
                },
                TransformOutput=output,
                TransformResources={
                    "InstanceType": spec.instance_type,
                    "InstanceCount": spec.instance_count,
                },
                DataProcessing={"JoinSource": "None"},
                Tags=[{"Key": key, "Value": value} for key, value in spec.tags.items()],
            )
        except ClientError as error:
            if is_duplicate_name(error, spec.job_name):
                # Started by an earlier delivery whose idempotency record was lost: the job stands.
                return spec.job_name
            details = error.response.get("Error", {})
            raise TransformJobError(
                f"CreateTransformJob {spec.job_name} failed: {details.get('Code')}: {details.get('Message')}"
            ) from None
        except BotoCoreError as error:
            raise TransformJobError(f"CreateTransformJob {spec.job_name} failed: {error}") from None
        return str(answer["TransformJobArn"])


def is_duplicate_name(error: Any, job_name: str) -> bool:
    details = error.response.get("Error", {})
    message = str(details.get("Message", "")).lower()
    return (
        details.get("Code") in _DUPLICATE_CODES
        and job_name.lower() in message
        and any(phrase in message for phrase in _DUPLICATE_PHRASES)
    )
