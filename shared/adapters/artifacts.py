"""Artifact stores: the pipeline's JSON reports in S3, or in a local folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


class S3ArtifactStore:
    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def read_json(self, uri: str) -> dict[str, Any]:
        bucket, key = split_s3_uri(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{uri} does not exist: did its job write it?") from None
        document: dict[str, Any] = json.loads(body)
        return document


class LocalArtifactStore:
    """``file://`` URIs or plain paths, as the local runner writes them."""

    def read_json(self, uri: str) -> dict[str, Any]:
        path = Path(urlparse(uri).path if uri.startswith("file://") else uri)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: did its job write it?")
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return document
