"""Local bundling, never Docker: the Lambda functions' code and the SageMaker jobs' source bundle.

A Lambda bundle holds exactly the repository modules its handler imports, found by following the
imports from the handler, and no third-party packages: Powertools, pydantic and pydantic-settings
(shared/settings.py; in the V3 layer's ``all`` extra since Powertools 3.3.0, aws-powertools/
powertools-lambda-python PR 5516) come from the
Powertools layer, boto3 from the Lambda runtime. So each package stays a few hundred kilobytes, and
a handler that starts importing numpy fails the bundle test rather than a cold start.

A bundle also ships our modules' bytecode when the Python running the synthesis is the runtime's
version: Lambda's code folder is read-only, so without it every cold start compiles them again
(about 15 ms). The bytecode is bound to no timestamp (zipping changes them) and is not checked
against the source: the bundle never changes once built.

The SageMaker jobs need no bundle: the project image carries their code and libraries (see
sagemaker_jobs/image/ and cdk/images.py).
"""

from __future__ import annotations

import ast
import compileall
import logging
import py_compile
import shutil
import sys
from pathlib import Path

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PYTHON = "3.12"  # the functions' runtime (cdk/functions.py uses the matching Runtime)
OUR_PACKAGES = ("lambdas", "shared", "sagemaker_jobs", "step_functions")
log = logging.getLogger(__name__)


def _module_file(module: str) -> Path | None:
    base = REPO_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except those under ``if TYPE_CHECKING:`` (imports for the type checker only)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if (
            isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
        ):
            pending += node.orelse
            continue
        pending += ast.iter_child_nodes(node)
    return nodes


def module_sources(entry_module: str) -> tuple[str, ...]:
    """The repository files ``entry_module`` imports, transitively, with their packages' __init__."""
    found: set[Path] = set()
    pending = [entry_module]
    while pending:
        module = pending.pop()
        path = _module_file(module)
        if path is None or path in found:
            continue
        found.add(path)
        parts = module.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # the enclosing packages
        package = module if path.name == "__init__.py" else ".".join(parts[:-1])
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative import
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    origin = ".".join([*base, node.module] if node.module else base)
                else:
                    origin = node.module or ""
                pending.append(origin)
                pending += [f"{origin}.{alias.name}" for alias in node.names]  # submodules
    return tuple(
        sorted(
            str(p.relative_to(REPO_ROOT)) for p in found if p.relative_to(REPO_ROOT).parts[0] in OUR_PACKAGES
        )
    )


@jsii.implements(ILocalBundling)
class CopySources:
    def __init__(self, sources: tuple[str, ...], bytecode_for: str) -> None:
        self.sources = sources
        self.bytecode_for = bytecode_for

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_: object) -> bool:
        for relative in self.sources:
            target = Path(output_dir) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / relative, target)
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        if running == self.bytecode_for:
            compileall.compile_dir(
                output_dir, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
            )
        else:
            log.warning(
                "Lambda bundle without bytecode: synthesizing on Python %s, Lambda runs %s",
                running,
                self.bytecode_for,
            )
        return True


def function_bundling(handler_module: str, bytecode_for: str = LAMBDA_PYTHON) -> BundlingOptions:
    # The image is never pulled: local bundling always succeeds first. CDK reuses a bundle when the
    # source and the options match, and our functions share the repository as source: the command,
    # never run, makes each function's options (so its bundle) its own.
    return BundlingOptions(
        image=DockerImage.from_registry("local-bundling-only"),
        command=["bundle", handler_module],
        local=CopySources(module_sources(handler_module), bytecode_for),
    )


# What the API handler imports, and nothing from shared/ml (numpy, pandas, sklearn, xgboost).
API_SOURCES = module_sources("lambdas.api.handler")


def api_bundling(bytecode_for: str = LAMBDA_PYTHON) -> BundlingOptions:
    return function_bundling("lambdas.api.handler", bytecode_for)
