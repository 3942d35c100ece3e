"""Container images from the SageMaker SDK's image URI lookup, resolved offline at synth time.

The stack is environment-agnostic, so it cannot know its region when synthesized: each image is
looked up for every supported region into a CloudFormation mapping, read with the stack's region.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from aws_cdk import Aws, CfnMapping
from constructs import Construct

# Commercial regions where SageMaker offers every image below.
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


# The jobs (processing, tuning, training, drift) run in the TensorFlow image: the heaviest of our
# libraries is already there, and the job's requirements.txt adds the rest.
JOB_IMAGE = ImageChoice("tensorflow", "2.19", "py312", "training")
# Serving, per model family: the framework container that runs our inference script.
SERVING_IMAGES = {
    "xgboost": ImageChoice("xgboost", "3.0-5"),
    "random_forest": ImageChoice("sklearn", "1.4-2"),
    "keras": ImageChoice("sklearn", "1.4-2"),  # tensorflow-cpu comes from the requirements
}
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


class Images(Construct):
    """One mapping, region → image, for the job, serving and Model Monitor images."""

    def __init__(self, scope: Construct, construct_id: str, *, serving_family: str) -> None:
        super().__init__(scope, construct_id)
        if serving_family not in SERVING_IMAGES:
            raise ValueError(f"no serving image for family {serving_family!r}: {sorted(SERVING_IMAGES)}")
        choices = {"job": JOB_IMAGE, "serving": SERVING_IMAGES[serving_family], "monitor": MONITOR_IMAGE}
        self.mapping = CfnMapping(
            self,
            "ByRegion",
            mapping={
                region: {name: image_uri(choice, region) for name, choice in choices.items()}
                for region in REGIONS
            },
        )

    def uri(self, name: str) -> str:
        return self.mapping.find_in_map(Aws.REGION, name)
