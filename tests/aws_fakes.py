"""Fakes the AWS-facing tests share: offline credentials for moto, and a Lambda context."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

REGION = "eu-west-1"
ACCOUNT = "123456789012"


def offline_credentials(monkeypatch: pytest.MonkeyPatch, region: str = REGION) -> None:
    """Fake credentials and a region, and no endpoint override or profile that could reach AWS."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", region)
    monkeypatch.setenv("AWS_REGION", region)
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL_SAGEMAKER",
        "AWS_ENDPOINT_URL_DYNAMODB",
    ):
        monkeypatch.delenv(name, raising=False)


@dataclass
class FakeLambdaContext:
    """What Powertools reads of a Lambda context."""

    function_name: str
    memory_limit_in_mb: int = 512
    remaining_ms: int = 29_000
    function_version: str = "$LATEST"
    aws_request_id: str = "b6f1c0de-0000-4000-8000-000000000001"
    log_stream_name: str = "2026/11/02/[$LATEST]0123456789abcdef"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms
