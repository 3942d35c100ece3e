"""Artifact stores: the pipeline's JSON reports in S3, or in a local folder."""

from __future__ import annotations

import json
import mimetypes
import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def tar_member(stream: IO[bytes], name: str, where: str) -> bytes:
    """The shallowest ``name`` in a gzipped tar, read in one pass (no seeking, so S3 streams work)."""
    found: tuple[int, bytes] | None = None
    with tarfile.open(fileobj=stream, mode="r|gz") as archive:
        for member in archive:
            if member.isfile() and Path(member.name).name == name:
                depth = len(Path(member.name).parts)
                if found is None or depth < found[0]:
                    extracted = archive.extractfile(member)
                    found = (depth, extracted.read() if extracted else b"")
    if found is None:
        raise FileNotFoundError(f"{where} holds no {name}")
    return found[1]


class S3ArtifactStore:
    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client

    def read_bytes(self, uri: str) -> bytes:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{uri} does not exist: did its job write it?") from None
        except ClientError as error:
            # S3 answers a missing key with 403, not 404, to a caller without s3:ListBucket (GetObject's
            # documented behaviour): listing that very key tells "absent" from "denied".
            if error.response.get("Error", {}).get("Code") == "AccessDenied" and self._absent(bucket, key):
                raise FileNotFoundError(f"{uri} does not exist") from None
            raise
        return body

    def _absent(self, bucket: str, key: str) -> bool:
        """Whether ``key`` is surely not in the bucket; False when that cannot be listed either."""
        from botocore.exceptions import ClientError

        try:
            listed = self.client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        except ClientError:
            return False
        return not any(item.get("Key") == key for item in listed.get("Contents", []))

    def read_json(self, uri: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.read_bytes(uri))
        return document

    def read_tar_member(self, uri: str, name: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{uri} does not exist") from None
        return tar_member(body, name, uri)

    def copy(self, source: str, target: str) -> None:
        source_bucket, source_key = split_s3_uri(source)
        bucket, key = split_s3_uri(target)
        self.client.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key)  # multipart if large

    def write_bytes(self, uri: str, body: bytes) -> None:
        bucket, key = split_s3_uri(uri)
        # Typed by extension, so the console and a presigned link open report.html as a page.
        kind = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=kind)

    def exists_under(self, prefix_uri: str) -> bool:
        bucket, prefix = split_s3_uri(prefix_uri)
        return bool(self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))

    def write_json(self, uri: str, document: Mapping[str, Any]) -> None:
        bucket, key = split_s3_uri(uri)
        self.client.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(document, indent=2).encode(),
            ContentType="application/json",
        )


class LocalArtifactStore:
    """``file://`` URIs or plain paths, as the local runner writes them."""

    def read_bytes(self, uri: str) -> bytes:
        path = _local_path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: did its job write it?")
        return path.read_bytes()

    def read_json(self, uri: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.read_bytes(uri))
        return document

    def read_tar_member(self, uri: str, name: str) -> bytes:
        path = _local_path(uri)
        with path.open("rb") as stream:
            return tar_member(stream, name, str(path))

    def copy(self, source: str, target: str) -> None:
        destination = _local_path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_local_path(source), destination)

    def write_bytes(self, uri: str, body: bytes) -> None:
        path = _local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    def write_json(self, uri: str, document: Mapping[str, Any]) -> None:
        path = _local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")

    def exists_under(self, prefix_uri: str) -> bool:
        path = _local_path(prefix_uri)
        return path.is_file() or (path.is_dir() and any(p.is_file() for p in path.rglob("*")))


def _local_path(uri: str) -> Path:
    return Path(urlparse(uri).path if uri.startswith("file://") else uri)


def store_for(uri: str) -> S3ArtifactStore | LocalArtifactStore:
    """The store that holds ``uri``: S3 for s3:// URIs, the file system otherwise."""
    return S3ArtifactStore() if uri.startswith("s3://") else LocalArtifactStore()
