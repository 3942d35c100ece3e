"""Model registries of the cloud: SageMaker model packages, and a SageMaker-managed MLflow server.

The MLflow side speaks MLflow's REST API signed with SigV4 (as SageMaker's MLflow tracking servers
require), so the pipeline-tasks Lambda needs neither the mlflow package nor its dependencies.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from shared.ports import ModelPackageRequest

# CreateModelPackage's CustomerMetadataProperties in botocore's SageMaker model: at most 50 entries, keys
# of 1-128 and values of 1-256 characters, letters, digits, spaces and _.:/=+-@ only.
_METADATA_ENTRIES = 50
_METADATA_KEY_LIMIT = 128
_METADATA_VALUE_LIMIT = 256
_METADATA_OUTSIDE = re.compile(r"[^\w .:/=+\-@]")


class SageMakerModelPackages:
    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("sagemaker")
        self.client = client

    def register(self, request: ModelPackageRequest) -> str:
        from botocore.exceptions import ClientError

        try:
            self.client.create_model_package_group(
                ModelPackageGroupName=request.group,
                ModelPackageGroupDescription="claims-risk challengers: approved if they passed the gates",
            )
        except ClientError as error:
            if "already exists" not in str(error):
                raise
        answer = self.client.create_model_package(
            ModelPackageGroupName=request.group,
            ModelPackageDescription=request.description[:1000],
            ModelApprovalStatus=request.approval,
            InferenceSpecification={
                "Containers": [{"Image": request.image_uri, "ModelDataUrl": request.model_data_uri}],
                "SupportedContentTypes": ["application/json", "text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large", "ml.m5.xlarge", "ml.c5.large"],
                "SupportedTransformInstanceTypes": ["ml.m5.large", "ml.m5.xlarge"],
            },
            ModelMetrics={
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": request.evaluation_uri}
                },
                "Explainability": {"Report": {"ContentType": "text/html", "S3Uri": request.report_uri}},
            },
            CustomerMetadataProperties=_metadata(request),
        )
        return str(answer["ModelPackageArn"])

    def approve(self, arn: str, request: ModelPackageRequest) -> None:
        self.client.update_model_package(
            ModelPackageArn=arn,
            ModelApprovalStatus="Approved",
            ApprovalDescription=request.description[:1000],
            # Sent again: UpdateModelPackage sets the metadata it is given (moto drops what is left out).
            CustomerMetadataProperties=_metadata(request),
        )


def _metadata(request: ModelPackageRequest) -> dict[str, str]:
    """The package's tags and metrics as SageMaker accepts them: other characters become "_" (a gate
    summary such as "roc_auc 0.600 < 0.800" holds "<"), long text is cut, and the lineage comes first."""
    entries = [
        *((k, str(v)) for k, v in request.tags.items()),
        *((f"metric_{k}", f"{v:.6g}") for k, v in request.metrics.items()),
    ]
    return {
        metadata_text(key, _METADATA_KEY_LIMIT): metadata_text(value, _METADATA_VALUE_LIMIT)
        for key, value in entries[:_METADATA_ENTRIES]
    }


def metadata_text(text: str, limit: int = _METADATA_VALUE_LIMIT) -> str:
    """``text`` as a CustomerMetadataProperties key or value: other characters become "_", cut."""
    return _METADATA_OUTSIDE.sub("_", text)[:limit] or "-"


class MlflowRestRegistry:
    """Registers a version in an MLflow registry over REST, SigV4-signed for SageMaker's servers."""

    def __init__(self, tracking_uri: str, region: str, session: Any = None) -> None:
        if session is None:
            import boto3

            session = boto3.Session()
        self.tracking_uri, self.region, self.session = tracking_uri.rstrip("/"), region, session

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = f"{self.tracking_uri}/api/2.0/mlflow/{path}"
        data = json.dumps(body).encode()
        signed = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
        SigV4Auth(self.session.get_credentials(), "sagemaker-mlflow", self.region).add_auth(signed)
        request = urllib.request.Request(url, data=data, headers=dict(signed.headers), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                document: dict[str, Any] = json.loads(answer.read() or b"{}")
                return document
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            if "RESOURCE_ALREADY_EXISTS" in detail:
                return {}
            raise RuntimeError(f"MLflow {path} answered {error.code}: {detail[:300]}") from error

    def register(self, name: str, source: str, tags: Mapping[str, str]) -> str:
        self._post("registered-models/create", {"name": name})
        answer = self._post(
            "model-versions/create",
            {
                "name": name,
                "source": source,
                "tags": [{"key": k, "value": v[:5000]} for k, v in tags.items()],
            },
        )
        return str(answer.get("model_version", {}).get("version", ""))
