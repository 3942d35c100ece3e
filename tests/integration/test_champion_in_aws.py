"""In AWS the evaluate job finds the model to beat at the URI the state machine passes; the first
run has none, and a mounted champion (the local runner's way) wins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sagemaker_jobs.processing.evaluate import CHAMPION_URI_ENV, champion_tarball
from tests.aws_fakes import offline_credentials

BUCKET = "claims-risk-data"
URI = f"s3://{BUCKET}/models/current/model.tar.gz"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    offline_credentials(monkeypatch)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def test_the_first_run_has_no_champion(s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHAMPION_URI_ENV, URI)
    assert champion_tarball(tmp_path / "champion", tmp_path) is None


def test_the_serving_model_is_fetched_when_it_exists(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.put_object(Bucket=BUCKET, Key="models/current/model.tar.gz", Body=b"tarball")
    monkeypatch.setenv(CHAMPION_URI_ENV, URI)
    fetched = champion_tarball(tmp_path / "champion", tmp_path)
    assert fetched is not None and fetched.read_bytes() == b"tarball"


def test_a_mounted_champion_wins_and_nothing_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = tmp_path / "champion"
    channel.mkdir()
    (channel / "model.tar.gz").write_bytes(b"local")
    monkeypatch.setenv(CHAMPION_URI_ENV, "s3://nowhere/at/all.tar.gz")  # would fail if reached
    assert champion_tarball(channel, tmp_path) == channel / "model.tar.gz"


def test_without_the_variable_there_is_no_champion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHAMPION_URI_ENV, raising=False)
    assert champion_tarball(tmp_path / "champion", tmp_path) is None
