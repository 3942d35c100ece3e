"""What the CDK app synthesizes for the API, checked offline on the template and the bundled asset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import assertions

from app import build_app

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["dev", "prod"])
def synthesized(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Any]:
    stage = request.param
    outdir = tmp_path_factory.mktemp(f"cdk-{stage}")
    app = build_app({"stage": stage}, outdir=str(outdir))
    assembly = app.synth()
    return stage, assembly


def template(synthesized: tuple[str, Any]) -> assertions.Template:
    stage, assembly = synthesized
    return assertions.Template.from_json(assembly.get_stack_by_name(f"ClaimsRisk-{stage}").template)


def test_the_api_function_runs_python_312_on_arm_with_the_powertools_layer(
    synthesized: tuple[str, Any],
) -> None:
    t = template(synthesized)
    t.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Runtime": "python3.12",
            "Architectures": ["arm64"],
            "Handler": "lambdas.api.handler.lambda_handler",
            "TracingConfig": {"Mode": "Active"},
            "Layers": [
                {
                    "Fn::Join": [
                        "",
                        assertions.Match.array_with(
                            [
                                assertions.Match.string_like_regexp(
                                    "AWSLambdaPowertoolsPythonV3-python312-arm64:\\d+"
                                )
                            ]
                        ),
                    ]
                }
            ],
            "Environment": {
                "Variables": assertions.Match.object_like(
                    {"SAGEMAKER_ENDPOINT_NAME": {"Ref": "EndpointName"}}
                )
            },
        },
    )


def test_the_function_may_only_invoke_the_named_endpoint(synthesized: tuple[str, Any]) -> None:
    policies = template(synthesized).find_resources("AWS::IAM::Policy")
    statements = [s for p in policies.values() for s in p["Properties"]["PolicyDocument"]["Statement"]]
    invoke = [s for s in statements if s["Action"] == "sagemaker:InvokeEndpoint"]
    assert len(invoke) == 1
    resource = str(invoke[0]["Resource"])
    assert "endpoint/" in resource and "EndpointName" in resource and "*" not in resource
    assert all(not str(s["Action"]).startswith("sagemaker:") or s in invoke for s in statements)


def test_routes_proxy_to_the_function_and_the_stage_is_throttled(synthesized: tuple[str, Any]) -> None:
    stage, _ = synthesized
    t = template(synthesized)
    methods = t.find_resources("AWS::ApiGateway::Method")
    # /health, /swagger and the four scoped routes of shared/auth.py
    assert sorted(m["Properties"]["HttpMethod"] for m in methods.values()) == ["GET"] * 3 + ["POST"] * 3
    paths = {r["Properties"]["PathPart"] for r in t.find_resources("AWS::ApiGateway::Resource").values()}
    assert {"predict", "batch", "models", "current", "retrain", "health", "swagger"} <= paths
    for method in methods.values():
        assert method["Properties"]["Integration"]["Type"] == "AWS_PROXY"
    t.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": stage,
            "TracingEnabled": True,
            "MethodSettings": assertions.Match.array_with(
                [
                    assertions.Match.object_like(
                        {
                            "ThrottlingRateLimit": assertions.Match.any_value(),
                            "ThrottlingBurstLimit": assertions.Match.any_value(),
                        }
                    )
                ]
            ),
        },
    )


def test_the_lambda_package_holds_only_the_light_runtime_code(synthesized: tuple[str, Any]) -> None:
    _, assembly = synthesized
    assets = [
        Path(assembly.directory) / p
        for p in Path(assembly.directory).iterdir()
        if p.name.startswith("asset.")
    ]
    [asset] = [a for a in assets if (a / "lambdas").is_dir()]
    files = {str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file()}
    assert {"lambdas/api/handler.py", "shared/schema.py", "shared/adapters/endpoint.py"} <= files
    assert not any(f.startswith("shared/ml") for f in files)
    assert not any(part in f for f in files for part in ("numpy", "pandas", "sklearn", "xgboost"))
    assert sum(p.stat().st_size for p in asset.rglob("*") if p.is_file()) < 1_000_000


def test_the_handler_imports_nothing_outside_the_package() -> None:
    """Every shared module the handler imports is in the bundle list, so the Lambda cannot fail on import."""
    import ast

    from cdk.bundling import API_SOURCES

    bundled = {s.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for s in API_SOURCES}
    for source in API_SOURCES:
        tree = ast.parse((REPO_ROOT / source).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in {"shared", "lambdas"}
            ):
                assert node.module in bundled, f"{source} imports {node.module}, which is not bundled"
