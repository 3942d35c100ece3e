"""The web page's hosting in AWS, checked on the synthesized template: private files behind
CloudFront, and the API's paths on the same origin, never cached, with the caller's credentials."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import assertions

from tests.infra.conftest import Synthesized

CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"  # AWS managed cache policy ids
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


@pytest.fixture
def synthesized(synthesized_stages: dict[str, Synthesized]) -> tuple[assertions.Template, Path]:
    dev = synthesized_stages["dev"]
    return dev.template, dev.directory


def _distribution(t: assertions.Template) -> dict[str, Any]:
    (config,) = [
        r["Properties"]["DistributionConfig"]
        for r in t.find_resources("AWS::CloudFront::Distribution").values()
    ]
    assert isinstance(config, dict)
    return config


def test_the_files_bucket_is_private_encrypted_and_https_only(
    synthesized: tuple[assertions.Template, Path],
) -> None:
    t, _ = synthesized
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "VersioningConfiguration": {"Status": "Enabled"},
        },
    )
    policies = json.dumps(t.find_resources("AWS::S3::BucketPolicy"))
    assert '"aws:SecureTransport": "false"' in policies
    assert "cloudfront.amazonaws.com" in policies  # read by the distribution's origin access control only


def test_the_page_is_served_over_https_with_security_headers(
    synthesized: tuple[assertions.Template, Path],
) -> None:
    config = _distribution(synthesized[0])
    assert config["DefaultRootObject"] == "index.html"
    default = config["DefaultCacheBehavior"]
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"
    assert default["ResponseHeadersPolicyId"]
    # The files are read through origin access control, never through a public bucket address.
    (files_origin,) = [o for o in config["Origins"] if "S3OriginConfig" in o]
    assert files_origin["OriginAccessControlId"] and default["TargetOriginId"] == files_origin["Id"]


def test_the_api_paths_share_the_origin_uncached_with_the_callers_credentials(
    synthesized: tuple[assertions.Template, Path],
) -> None:
    config = _distribution(synthesized[0])
    behaviors = {b["PathPattern"]: b for b in config["CacheBehaviors"]}
    assert set(behaviors) == {"/api/*", "/health", "/swagger*"}
    for behavior in behaviors.values():
        assert behavior["CachePolicyId"] == CACHING_DISABLED
        assert behavior["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST
        assert behavior["ViewerProtocolPolicy"] == "https-only"
        assert set(behavior["AllowedMethods"]) >= {"GET", "POST", "OPTIONS"}
    api_origins = [o for o in config["Origins"] if "CustomOriginConfig" in o]
    assert (
        len(api_origins) == 1 and api_origins[0]["CustomOriginConfig"]["OriginProtocolPolicy"] == "https-only"
    )


def test_the_page_and_its_config_are_deployed_to_the_bucket(
    synthesized: tuple[assertions.Template, Path],
) -> None:
    t, outdir = synthesized
    deployments = t.find_resources("Custom::CDKBucketDeployment")
    assert len(deployments) == 1
    (deployment,) = deployments.values()
    assert deployment["Properties"]["DistributionPaths"] == ["/*"]
    # The page's own asset folder holds index.html as it is in the repository.
    pages = list(outdir.glob("asset.*/index.html"))
    repo_page = Path(__file__).resolve().parents[2] / "local" / "web" / "index.html"
    assert any(p.read_bytes() == repo_page.read_bytes() for p in pages)
    # config.json, deployed beside it, says the API is on the page's own origin and how to sign in.
    # Its deploy-time values are markers the deployment replaces with SourceMarkers' values.
    [config_file] = outdir.glob("asset.*/config.json")
    markers: dict[str, Any] = {}
    for source in deployment["Properties"].get("SourceMarkers", []):
        markers.update(source)
    text = config_file.read_text(encoding="utf-8")
    for marker, value in markers.items():
        text = text.replace(marker, _as_deployed(value))
    config = json.loads(text)
    assert config["api_base"] == ""
    sign_in = config["auth"]
    assert sign_in["authorize_url"].endswith(".amazoncognito.com/oauth2/authorize")
    assert sign_in["token_url"].endswith(".amazoncognito.com/oauth2/token")
    assert sign_in["client_id"] == "{Ref:ClaimsApiUsersPeople}"
    assert sign_in["redirect_uri"] == "https://{GetAtt:WebPageDistribution.DomainName}/"
    assert {"openid", "claims-risk/predict", "claims-risk/models.read"} <= set(sign_in["scopes"])


def _as_deployed(value: Any) -> str:
    """A marker's CloudFormation value as text, each reference shown as {Ref:logical id, hash cut}."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_as_deployed(part) for part in parts)
    if "Ref" in value:
        return "{Ref:" + re.sub(r"[0-9A-F]{8}$", "", str(value["Ref"])) + "}"
    if "Fn::GetAtt" in value:
        name, attribute = value["Fn::GetAtt"]
        return "{GetAtt:" + re.sub(r"[0-9A-F]{8}$", "", str(name)) + "." + str(attribute) + "}"
    raise AssertionError(f"unexpected marker value {value}")
