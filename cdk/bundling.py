"""Local bundling of the API Lambda's code: no Docker, only the light runtime modules.

Third-party packages are not installed into the bundle: Powertools and pydantic come from the
Powertools layer, boto3 from the Lambda runtime. So the package stays a few hundred kilobytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling

REPO_ROOT = Path(__file__).resolve().parent.parent
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
    def __init__(self, sources: tuple[str, ...]) -> None:
        self.sources = sources

    def try_bundle(self, output_dir: str, *, image: DockerImage, **_: object) -> bool:
        for relative in self.sources:
            target = Path(output_dir) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / relative, target)
        return True


def api_bundling() -> BundlingOptions:
    # The image is never pulled: local bundling always succeeds first.
    return BundlingOptions(
        image=DockerImage.from_registry("local-bundling-only"), local=CopySources(API_SOURCES)
    )
