"""The linters AWS users trust, on the synthesized templates of both stages: cfn-lint, cdk-nag's
AWS Solutions pack and checkov; and the CDK CLI from npm synthesizes the same app offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import STAGES, Synthesized

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKOV = REPO_ROOT / ".venv-checkov" / "bin" / "checkov"
CDK_CLI = REPO_ROOT / "tests" / "infra" / "cdk-cli" / "node_modules" / ".bin" / "cdk"
# W3005: CDK writes a DependsOn on each function's role policy beside the GetAtt on the role: the
# policy must exist before the function runs, which the GetAtt alone does not ensure.
CFN_LINT_IGNORED = ("W3005",)


def test_cfn_lint_finds_nothing_and_checks_the_inlined_state_machine(synthesized: Synthesized) -> None:
    answer = subprocess.run(
        [
            str(Path(sys.executable).parent / "cfn-lint"),
            "--format",
            "json",
            "--ignore-checks",
            *CFN_LINT_IGNORED,
            "--",
            str(synthesized.template_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(answer.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=1)[:3000]
    # The ASL is in the template itself (not an S3 asset), so cfn-lint's state machine checks ran on it.
    [machine] = [
        r
        for r in synthesized.template_json["Resources"].values()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    assert "DefinitionString" in machine["Properties"] and "DefinitionS3Location" not in machine["Properties"]


def test_cfn_lint_would_catch_a_broken_state_machine(synthesized: Synthesized, tmp_path: Path) -> None:
    """The check above can fail: a state of a type ASL does not know is reported (E3601)."""
    template = synthesized.template_json
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            definition = resource["Properties"]["DefinitionString"]
            resource["Properties"]["DefinitionString"] = definition.replace(
                '"Type": "Choice"', '"Type": "Choise"', 1
            )
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(template), encoding="utf-8")
    answer = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "json", "--", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "E3601" in {f["Rule"]["Id"] for f in json.loads(answer.stdout or "[]")}, answer.stdout[:2000]


def test_checkov_fails_nothing_and_every_skip_says_why(synthesized: Synthesized) -> None:
    assert CHECKOV.exists(), "run `make infra-tools` (make test does) to install checkov from its lock"
    answer = subprocess.run(
        [
            str(CHECKOV),
            "-f",
            str(synthesized.template_file),
            "--framework",
            "cloudformation",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(answer.stdout)
    report = report[0] if isinstance(report, list) else report
    summary = report["summary"]
    print(
        f"checkov {synthesized.stage}: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['skipped']} skipped with reasons"
    )
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert summary["passed"] > 150
    for skipped in report["results"]["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "")) > 30, skipped["check_id"]


def test_cdk_nag_runs_at_synthesis_and_rejects_an_unacknowledged_finding(tmp_path: Path) -> None:
    """build_app carries the AWS Solutions pack: the stacks above passed it, and a bad bucket fails it."""
    from aws_cdk import Stack
    from aws_cdk import aws_s3 as s3

    from app import build_app

    app = build_app({"stage": "dev"}, outdir=str(tmp_path))
    stack = Stack.of(app.node.find_child("ClaimsRisk-dev"))
    s3.Bucket(stack, "Careless")  # no access logs, no SSL policy: AwsSolutions-S1 and S10
    with pytest.raises(Exception, match="ValidationFailed"):
        app.synth()
    report = (tmp_path / "validation-report.json").read_text(encoding="utf-8")
    assert "AwsSolutions-S1" in report and "Careless" in report


def test_the_acknowledged_findings_are_precise_and_explained() -> None:
    from cdk.policy_findings import _by_path, _stage_paths

    for path, findings in {**_by_path(), **_stage_paths("dev")}.items():
        for finding_id, reason in findings:
            assert finding_id.startswith("AwsSolutions::AwsSolutions-"), (path, finding_id)
            assert "*]" not in finding_id or "[" in finding_id  # wildcards only as named findings
            assert len(reason) > 40, (path, finding_id)


@pytest.mark.parametrize("stage", STAGES)
def test_the_cdk_cli_from_npm_synthesizes_offline(
    stage: str, synthesized_stages: dict[str, Synthesized], tmp_path: Path
) -> None:
    assert CDK_CLI.exists(), "run `make infra-tools` (make test does) to install the CDK CLI from its lock"
    # As a newcomer runs it: no virtualenv activated, so cdk.json's app command must find the
    # project's interpreter by itself.
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {
        **{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"},
        "PATH": path,
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    answer = subprocess.run(
        [
            str(CDK_CLI),
            "synth",
            "--context",
            f"stage={stage}",
            "--no-notices",
            "--quiet",
            "--output",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )
    assert answer.returncode == 0, answer.stderr[-3000:]
    by_cli = json.loads((tmp_path / f"ClaimsRisk-{stage}.template.json").read_text(encoding="utf-8"))
    by_python = synthesized_stages[stage].template_json

    # The same app through both doors: the same resources, with cdk.json's context in both. (An API
    # Gateway deployment's id ends in a hash of its inputs, which differ in the CLI's metadata.)
    def resources(template: dict[str, Any]) -> dict[str, str]:
        return {
            re.sub(r"(Deployment)[0-9A-F]{8}[0-9a-f]+$", r"\1", k): v["Type"]
            for k, v in template["Resources"].items()
            if v["Type"] != "AWS::CDK::Metadata"  # the CLI's version reporting, off in tests
        }

    assert resources(by_cli) == resources(by_python)
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert "missing" not in manifest  # no context lookups: the stack is environment-agnostic
