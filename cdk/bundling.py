"""Local bundling of the API Lambda's code: no Docker, only the light runtime modules.

Third-party packages are not installed into the bundle: Powertools and pydantic come from the
Powertools layer, boto3 from the Lambda runtime. So the package stays a few hundred kilobytes.

The bundle also ships our modules' bytecode when the Python running the synthesis is the runtime's
version: Lambda's code folder is read-only, so without it every cold start compiles them again
(about 15 ms). The bytecode is bound to no timestamp (zipping changes them) and is not checked
against the source: the bundle never changes once built.
"""

from __future__ import annotations

import compileall
import logging
import py_compile
import shutil
import sys
from pathlib import Path

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling

REPO_ROOT = Path(__file__).resolve().parent.parent
LAMBDA_PYTHON = "3.12"  # the API function's runtime (cdk/api.py uses the matching Runtime)
log = logging.getLogger(__name__)
# What the API handler imports, and nothing from shared/ml (numpy, pandas, sklearn, xgboost).
API_SOURCES = (
    "lambdas/__init__.py",
    "lambdas/api/__init__.py",
    "lambdas/api/handler.py",
    "shared/__init__.py",
    "shared/auth.py",
    "shared/schema.py",
    "shared/ports.py",
    "shared/scoring.py",
    "shared/adapters/__init__.py",
    "shared/adapters/endpoint.py",
    "shared/adapters/model_catalog.py",
    "shared/adapters/pipeline_starter.py",
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
                "API bundle without bytecode: synthesizing on Python %s, Lambda runs %s",
                running,
                self.bytecode_for,
            )
        return True


def api_bundling(bytecode_for: str = LAMBDA_PYTHON) -> BundlingOptions:
    # The image is never pulled: local bundling always succeeds first.
    return BundlingOptions(
        image=DockerImage.from_registry("local-bundling-only"),
        local=CopySources(API_SOURCES, bytecode_for),
    )
