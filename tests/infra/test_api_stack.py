"""What the CDK app synthesizes for the API, checked offline on the template and the bundled asset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from aws_cdk import assertions

from tests.infra.conftest import Synthesized

REPO_ROOT = Path(__file__).resolve().parents[2]


def template(synthesized: Synthesized) -> assertions.Template:
    return synthesized.template  # type: ignore[no-any-return]


def test_the_api_function_runs_python_312_on_arm_with_the_powertools_layer(
    synthesized: Synthesized,
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


def test_the_function_may_only_invoke_the_named_endpoint(synthesized: Synthesized) -> None:
    t = template(synthesized)
    functions = t.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "lambdas.api.handler.lambda_handler"}}
    )
    [role] = [f["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions.values()]
    policies = [
        p for p in t.find_resources("AWS::IAM::Policy").values() if {"Ref": role} in p["Properties"]["Roles"]
    ]
    statements = [s for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    invoke = [s for s in statements if s["Action"] == "sagemaker:InvokeEndpoint"]
    assert len(invoke) == 1
    resource = str(invoke[0]["Resource"])
    assert "endpoint/" in resource and "EndpointName" in resource and "*" not in resource
    assert all(not str(s["Action"]).startswith("sagemaker:") or s in invoke for s in statements)


def test_routes_proxy_to_the_function_and_the_stage_is_throttled(synthesized: Synthesized) -> None:
    stage = synthesized.stage
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


def test_the_lambda_package_holds_only_the_light_runtime_code(synthesized: Synthesized) -> None:
    assets = [p for p in synthesized.directory.iterdir() if p.name.startswith("asset.")]
    [asset] = [a for a in assets if (a / "lambdas" / "api").is_dir()]
    files = {str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file()}
    assert {"lambdas/api/handler.py", "shared/schema.py", "shared/adapters/endpoint.py"} <= files
    assert not any(f.startswith("shared/ml") for f in files)
    assert not any(part in f for f in files for part in ("numpy", "pandas", "sklearn", "xgboost"))
    assert sum(p.stat().st_size for p in asset.rglob("*") if p.is_file()) < 1_000_000


OUR_CODE = tuple(
    f"{REPO_ROOT}/{package}/" for package in ("shared", "lambdas", "sagemaker_jobs", "step_functions")
)
HANDLERS = ("lambdas.api.handler", "lambdas.batch_trigger.handler", "lambdas.pipeline_tasks.handler")


@pytest.mark.parametrize("handler", HANDLERS)
def test_each_function_imports_from_its_own_bundle_without_the_heavy_stack(
    synthesized_stages: dict[str, Synthesized], handler: str
) -> None:
    """Import the handler with only its bundle on the path: a module missing from the bundle fails
    here, not in a cold start; and none of numpy, pandas or sklearn is loaded."""
    directory = synthesized_stages["dev"].directory
    package_dir = handler.rsplit(".", 1)[0].replace(".", "/")
    [bundle] = [p for p in directory.iterdir() if p.name.startswith("asset.") and (p / package_dir).is_dir()]
    probe = (
        f"import sys, {handler}; "
        "heavy = sorted(m for m in ('numpy', 'pandas', 'sklearn', 'xgboost') if m in sys.modules); "
        "ours = sorted({m.__name__ for m in list(sys.modules.values()) "
        f"if (getattr(m, '__file__', None) or '').startswith({OUR_CODE!r})}}); "
        "print(heavy, ours)"
    )
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": "eu-west-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "SAGEMAKER_ENDPOINT_NAME": "e",
        "IDEMPOTENCY_TABLE": "t",
        "PYTHONPATH": str(bundle),
        "PYTHONDONTWRITEBYTECODE": "1",  # the assembly stays as synthesized
    }
    answer = subprocess.run(
        [sys.executable, "-P", "-c", probe], cwd=bundle, env=env, capture_output=True, text=True, check=False
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "[] []", answer.stdout
