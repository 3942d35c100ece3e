"""Each deployed function gets the settings its handler demands in Lambda (issue 11, point 13).

In Lambda a handler reads its settings class (shared/settings.py) at import, and a missing variable
fails the cold start. These tests hold the synthesized functions to those classes: every required
variable set, no variable set that nothing reads, and each handler imported from its own bundle
with the template's variables, as a cold start would, succeeds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from shared.settings import (
    LAMBDA_MARKER,
    LAMBDA_RUNTIME_VARIABLES,
    LAMBDA_SETTINGS,
    POWERTOOLS_VARIABLES,
)
from tests.infra.conftest import Synthesized

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
REGION: Final = "eu-west-1"
# What the Lambda runtime sets on each function, besides the template's variables.
RUNTIME: Final = {"AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}
assert set(RUNTIME) <= LAMBDA_RUNTIME_VARIABLES


def our_functions(s: Synthesized) -> dict[str, dict[str, Any]]:
    """Handler module to the function's properties, for the functions whose code is ours."""
    functions = {}
    for resource in s.template_json["Resources"].values():
        handler = (
            resource["Properties"].get("Handler", "") if resource["Type"] == "AWS::Lambda::Function" else ""
        )
        if handler.startswith("lambdas."):
            module = handler.rsplit(".", 1)[0]
            assert module not in functions, f"two functions run {module}"
            functions[module] = resource["Properties"]
    return functions


def variables(function: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = function.get("Environment", {}).get("Variables", {})
    return found


def test_every_function_has_a_settings_class_and_every_class_a_function(synthesized: Synthesized) -> None:
    assert set(our_functions(synthesized)) == set(LAMBDA_SETTINGS)


def test_every_variable_a_function_needs_in_lambda_is_set(synthesized: Synthesized) -> None:
    for module, function in our_functions(synthesized).items():
        required = set(LAMBDA_SETTINGS[module].required_in_lambda().values())
        missing = required - set(variables(function)) - LAMBDA_RUNTIME_VARIABLES
        assert not missing, f"{module} would fail its cold start: {sorted(missing)} not set"


def test_no_function_is_given_a_variable_that_nothing_reads(synthesized: Synthesized) -> None:
    """A name set but read by no settings field is a typo or a leftover: a setting that never applies."""
    for module, function in our_functions(synthesized).items():
        read = set(LAMBDA_SETTINGS[module].variables().values()) | POWERTOOLS_VARIABLES
        unread = set(variables(function)) - read
        assert not unread, f"{module} is given {sorted(unread)}, which no field of shared/settings.py reads"


def resolved(value: Any, parameters: dict[str, Any]) -> str:
    """A stand-in for what CloudFormation makes of a value: parameters take their defaults, other
    references a placeholder, so a setting's format (s3://bucket/key) can still be checked."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    [(intrinsic, argument)] = value.items()
    if intrinsic == "Ref":
        default = parameters.get(argument, {}).get("Default")
        return str(default) if default is not None else argument.lower()
    if intrinsic == "Fn::GetAtt":
        return f"arn:aws:placeholder:{REGION}:123456789012:{argument[0].lower()}"
    if intrinsic == "Fn::Join":
        separator, parts = argument
        return str(separator).join(resolved(part, parameters) for part in parts)
    if intrinsic == "Fn::Sub":
        return re.sub(r"\$\{([^}]+)\}", lambda m: m.group(1).replace("AWS::", "").lower(), argument)
    raise AssertionError(f"no stand-in for {intrinsic}")


def bundle_of(s: Synthesized, module: str) -> Path:
    handler_file = Path(*module.split(".")).with_suffix(".py")
    [bundle] = [
        p for p in s.directory.iterdir() if p.name.startswith("asset.") and (p / handler_file).is_file()
    ]
    return bundle


def test_each_handler_starts_from_its_bundle_with_the_templates_variables(synthesized: Synthesized) -> None:
    """A cold start, as near as offline gets: only the bundle on the path (the libraries are the
    layer's and the runtime's), only the template's variables and the runtime's, in Lambda."""
    parameters = synthesized.template_json.get("Parameters", {})
    ours = tuple(f"{REPO_ROOT}/{package}/" for package in ("lambdas", "shared", "step_functions"))
    for module, function in our_functions(synthesized).items():
        bundle = bundle_of(synthesized, module)
        assert (bundle / "shared" / "settings.py").is_file()
        assert not any(bundle.glob("pydantic_settings*")), "pydantic-settings comes from the layer"
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(bundle),
            "PYTHONDONTWRITEBYTECODE": "1",  # the assembly stays as synthesized
            LAMBDA_MARKER: f"claims-risk-{synthesized.stage}-{module.split('.')[1]}",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
            **RUNTIME,
            **{name: resolved(value, parameters) for name, value in variables(function).items()},
        }
        probe = (
            f"import sys, {module} as handler; "
            "print(type(handler.COLD_START_SETTINGS).__name__); "
            f"print(sorted(m for m, f in ((m, getattr(v, '__file__', None) or '') "
            f"for m, v in list(sys.modules.items())) if f.startswith({ours!r})))"
        )
        started = subprocess.run(
            [sys.executable, "-P", "-c", probe],
            cwd=bundle,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        assert started.returncode == 0, f"{module}: {started.stderr[-3000:]}"
        settings_class, outside_bundle = started.stdout.strip().splitlines()
        assert settings_class == LAMBDA_SETTINGS[module].__name__, module
        assert outside_bundle == "[]", f"{module} imported repository code missing from its bundle"


@pytest.mark.parametrize("module", sorted(LAMBDA_SETTINGS))
def test_the_check_would_see_a_construct_forget_a_variable(
    synthesized_stages: dict[str, Synthesized], module: str
) -> None:
    """The same cold start without one variable the construct sets fails, naming it."""
    dev = synthesized_stages["dev"]
    function = our_functions(dev)[module]
    parameters = dev.template_json.get("Parameters", {})
    given = {name: resolved(value, parameters) for name, value in variables(function).items()}
    forgotten = next(v for v in LAMBDA_SETTINGS[module].required_in_lambda().values() if v in given)
    del given[forgotten]
    bundle = bundle_of(dev, module)
    failed = subprocess.run(
        [sys.executable, "-P", "-c", f"import {module}"],
        cwd=bundle,
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(bundle),
            "PYTHONDONTWRITEBYTECODE": "1",  # the assembly stays as synthesized
            LAMBDA_MARKER: "claims-risk-dev-test",
            "POWERTOOLS_TRACE_DISABLED": "true",
            **RUNTIME,
            **given,
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode != 0
    assert f"missing {forgotten}" in failed.stderr, failed.stderr[-3000:]
