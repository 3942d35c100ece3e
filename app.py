#!/usr/bin/env python3
"""The CDK app: `npx cdk synth` / `cdk deploy`, or `python app.py` (which synthesizes into cdk.out)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks

from cdk.config import stage_config
from cdk.stack import ClaimsRiskStack

CDK_JSON = Path(__file__).resolve().parent / "cdk.json"


def cdk_json_context() -> dict[str, Any]:
    """cdk.json's context: the CLI loads it, but `python app.py` and tests must pass it themselves."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text(encoding="utf-8"))["context"]
    return context


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None) -> cdk.App:
    app = cdk.App(context={**cdk_json_context(), **(context or {})}, outdir=outdir)
    stage = str(app.node.try_get_context("stage") or "dev")
    ClaimsRiskStack(app, f"ClaimsRisk-{stage}", config=stage_config(stage))
    # AWS Solutions checks run at every synthesis; acknowledged findings carry their reasons.
    Validations.of(app).add_plugins(AwsSolutionsChecks(verbose=True))
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="synthesize the claims-risk stack")
    parser.add_argument("--context", "-c", action="append", default=[], metavar="KEY=VALUE")
    given = dict(item.split("=", 1) for item in parser.parse_args(argv).context)
    # The CDK CLI passes CDK_OUTDIR; run directly, the app writes to cdk.out like the CLI would.
    build_app(given, outdir=os.environ.get("CDK_OUTDIR", "cdk.out")).synth()


if __name__ == "__main__":
    main()
