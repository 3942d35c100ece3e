"""Container images: the project's own image for every job and the endpoint, and (only for accounts
that use Model Monitor's schedules) Model Monitor's analyzer.

The project image is built by CDK at deploy time from ``sagemaker_jobs/image/Dockerfile`` (a Docker
image asset; synthesis itself needs no Docker). A user without Docker deploys a prebuilt image of
the same commit instead: ``-c image_uri=<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>``.

The analyzer's URI is looked up offline by the SageMaker SDK for every supported region into a
CloudFormation mapping, read with the stack's region (the stack is environment-agnostic).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import cache

from aws_cdk import Aws, CfnMapping, IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from cdk.bundling import REPO_ROOT

DOCKERFILE = "sagemaker_jobs/image/Dockerfile"
# The build context is the repository root, limited to what the Dockerfile copies: the asset's hash,
# so the image tag, changes only when they do.
IMAGE_CONTEXT = ("pyproject.toml", "uv.lock", "shared", "sagemaker_jobs", "step_functions")
IMAGE_EXCLUDE = ["*", *(f"!{path}" for path in IMAGE_CONTEXT), "**/__pycache__", "**/*.pyc"]

# Commercial regions where SageMaker offers Model Monitor's analyzer.
REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "ca-central-1",
    "sa-east-1",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
)


@dataclass(frozen=True)
class ImageChoice:
    framework: str
    version: str
    py_version: str | None = None
    image_scope: str | None = None


MONITOR_IMAGE = ImageChoice("model-monitor", "")


@cache
def image_uri(choice: ImageChoice, region: str) -> str:
    from sagemaker.core import image_uris  # slow to import: only when synthesizing

    if choice.framework == "model-monitor":
        return str(image_uris.retrieve("model-monitor", region))
    return str(
        image_uris.retrieve(
            choice.framework,
            region,
            version=choice.version,
            py_version=choice.py_version,
            image_scope=choice.image_scope,
            instance_type="ml.m5.xlarge",
        )
    )


def code_version() -> str:
    """The commit being deployed, baked into the image as its code version."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Images(Construct):
    """The project image (built, or prebuilt and named), and Model Monitor's analyzer by region."""

    def __init__(self, scope: Construct, construct_id: str, *, prebuilt_uri: str | None = None) -> None:
        super().__init__(scope, construct_id)
        self.asset: ecr_assets.DockerImageAsset | None = None
        if prebuilt_uri:
            self.project = prebuilt_uri
        else:
            self.asset = ecr_assets.DockerImageAsset(
                self,
                "Project",
                directory=str(REPO_ROOT),
                file=DOCKERFILE,
                exclude=IMAGE_EXCLUDE,
                ignore_mode=IgnoreMode.DOCKER,
                platform=ecr_assets.Platform.LINUX_AMD64,  # ml.m5 instances are x86_64
                build_args={"CODE_VERSION": code_version()},
            )
            self.project = self.asset.image_uri
        self._monitor: CfnMapping | None = None

    @property
    def monitor(self) -> str:
        """Model Monitor's analyzer for this region (the mapping exists only once asked for)."""
        if self._monitor is None:
            self._monitor = CfnMapping(
                self,
                "ModelMonitorByRegion",
                mapping={region: {"monitor": image_uri(MONITOR_IMAGE, region)} for region in REGIONS},
            )
        return self._monitor.find_in_map(Aws.REGION, "monitor")
