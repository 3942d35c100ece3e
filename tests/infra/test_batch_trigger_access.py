"""What the synthesized templates let the drop-folder trigger do with the data bucket: read dropped
headers and the serving model's spec, write refusal notes; and the deploy step publish that spec."""

from __future__ import annotations

import json
from typing import Any

from shared.batch_jobs import REFUSAL_NOTE
from step_functions.state_machine import MODEL_SPEC_KEY
from tests.infra.conftest import Synthesized
from tests.infra.test_aws_stack import one, resources, statements_of_role

TRIGGER = "lambdas.batch_trigger.handler.lambda_handler"
TASKS = "lambdas.pipeline_tasks.handler.lambda_handler"


def rendered(value: Any) -> str:
    """A resource as text: ``Fn::GetAtt`` and ``Ref`` by logical id, ``Fn::Join`` joined."""
    if isinstance(value, str):
        return value
    [(intrinsic, argument)] = value.items()
    if intrinsic == "Fn::GetAtt":
        return str(argument[0])
    if intrinsic == "Ref":
        return str(argument)
    if intrinsic == "Fn::Join":
        separator, parts = argument
        return str(separator).join(rendered(part) for part in parts)
    raise AssertionError(f"cannot render {value}")


def data_bucket(s: Synthesized) -> str:
    [name] = [
        k
        for k, b in resources(s, "AWS::S3::Bucket").items()
        if k.startswith("Data") and "LoggingConfiguration" in b["Properties"]
    ]
    return name


def function(s: Synthesized, handler: str) -> dict[str, Any]:
    found: dict[str, Any]
    [found] = [
        f["Properties"]
        for f in resources(s, "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == handler
    ]
    return found


def role_statements(s: Synthesized, handler: str) -> list[dict[str, Any]]:
    return statements_of_role(s, function(s, handler)["Role"]["Fn::GetAtt"][0])


def listed(value: str | list[str]) -> tuple[str, ...]:
    return tuple(sorted([value] if isinstance(value, str) else value))


def test_the_trigger_reads_headers_and_the_serving_spec_and_writes_refusal_notes_only(
    synthesized: Synthesized,
) -> None:
    bucket = data_bucket(synthesized)
    s3 = {
        (
            listed(s["Action"]),
            tuple(sorted(rendered(r) for r in listed_resources(s))),
            json.dumps(s.get("Condition")),
        )
        for s in role_statements(synthesized, TRIGGER)
        if any(a.startswith("s3:") for a in listed(s["Action"]))
    }
    assert s3 == {
        (("s3:GetObject", "s3:GetObjectVersion"), (f"{bucket}/incoming/*",), "null"),
        (("s3:GetObject",), (f"{bucket}/{MODEL_SPEC_KEY}",), "null"),
        # Listing that one key only: a missing spec then reads as absent, not as denied.
        (("s3:ListBucket",), (bucket,), json.dumps({"StringEquals": {"s3:prefix": MODEL_SPEC_KEY}})),
        (("s3:PutObject",), (f"{bucket}/rejected/*/{REFUSAL_NOTE}",), "null"),
    }
    # The notes are written SSE-KMS with the data key; the spec is read with it.
    [data_key] = [k for k in resources(synthesized, "AWS::KMS::Key") if k.startswith("Data")]
    kms = {
        a
        for s in role_statements(synthesized, TRIGGER)
        if any(rendered(r) == data_key for r in listed_resources(s))
        for a in listed(s["Action"])
    }
    assert {"kms:Decrypt", "kms:GenerateDataKey"} <= kms


def listed_resources(statement: dict[str, Any]) -> list[Any]:
    found = statement["Resource"]
    return found if isinstance(found, list) else [found]


def test_the_trigger_is_told_where_the_deploy_step_publishes_the_spec(synthesized: Synthesized) -> None:
    bucket = data_bucket(synthesized)
    variables = function(synthesized, TRIGGER)["Environment"]["Variables"]
    assert rendered(variables["CLAIMS_RISK_MODEL_SPEC_S3"]) == f"s3://{bucket}/{MODEL_SPEC_KEY}"
    machine = one(synthesized, "AWS::StepFunctions::StateMachine")
    asl = json.loads(machine["DefinitionString"])
    payload = asl["States"]["deploy: model card"]["Parameters"]["Payload"]
    assert payload["spec"] == "s3://${DataBucket}/" + MODEL_SPEC_KEY
    assert rendered(machine["DefinitionSubstitutions"]["DataBucket"]) == bucket


def test_the_deploy_step_may_write_the_spec_beside_the_card(synthesized: Synthesized) -> None:
    bucket = data_bucket(synthesized)
    writes = {
        rendered(r)
        for s in role_statements(synthesized, TASKS)
        if "s3:PutObject" in listed(s["Action"])
        for r in listed_resources(s)
    }
    assert f"{bucket}/{MODEL_SPEC_KEY}" in writes
    assert f"{bucket}/models/current/manifest.json" in writes
