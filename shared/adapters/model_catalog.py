"""Model catalog adapters: the deployed model's manifest from S3 (AWS) or the local model store."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shared.ports import ModelCatalog, ModelCatalogError
from shared.settings import ModelCatalogSettings


class S3ModelCatalog:
    """Reads the manifest the deploy step writes next to the endpoint's model (``s3://bucket/key``)."""

    def __init__(self, bucket: str, key: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.bucket, self.key, self.client = bucket, key, client

    def current_manifest(self) -> Mapping[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except (ClientError, BotoCoreError) as error:
            raise ModelCatalogError(f"cannot read s3://{self.bucket}/{self.key}: {error}") from error
        loaded: dict[str, Any] = json.loads(body)
        return loaded


class LocalModelCatalog:
    """Reads ``<models>/current.json`` and the manifest of the version it points at."""

    def __init__(self, models_root: Path) -> None:
        self.models_root = models_root

    def current_manifest(self) -> Mapping[str, Any]:
        pointer = self.models_root / "current.json"
        try:
            version = json.loads(pointer.read_text(encoding="utf-8"))["model_version"]
            manifest = self.models_root / version / "manifest.json"
            loaded: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as error:
            raise ModelCatalogError(f"no deployed model in {self.models_root}") from error
        return loaded


def catalog_from(settings: ModelCatalogSettings) -> ModelCatalog:
    """The model card in S3 when the settings name it (always in Lambda); else the local store."""
    location = settings.model_card_location()
    if location is not None:
        return S3ModelCatalog(*location)
    return LocalModelCatalog(settings.home / "models")
