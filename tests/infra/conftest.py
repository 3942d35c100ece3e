"""One synthesis per stage for the whole infra suite: synthesizing costs seconds, asserting does not."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

STAGES = ("dev", "prod")


@dataclass(frozen=True)
class Synthesized:
    stage: str
    directory: Path  # the cloud assembly

    @property
    def template_file(self) -> Path:
        return self.directory / f"ClaimsRisk-{self.stage}.template.json"

    @property
    def template_json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.template_file.read_text(encoding="utf-8"))
        return document

    @property
    def template(self) -> Any:
        from aws_cdk import assertions

        return assertions.Template.from_json(self.template_json)


@pytest.fixture(scope="session")
def synthesized_stages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Synthesized]:
    """`python app.py`'s way: build_app loads cdk.json's context; cdk-nag runs as part of it."""
    from app import build_app

    stages = {}
    for stage in STAGES:
        outdir = tmp_path_factory.mktemp(f"cdk-{stage}")
        build_app({"stage": stage}, outdir=str(outdir)).synth()
        stages[stage] = Synthesized(stage, outdir)
    return stages


@pytest.fixture(params=STAGES)
def synthesized(request: pytest.FixtureRequest, synthesized_stages: dict[str, Synthesized]) -> Synthesized:
    return synthesized_stages[request.param]
