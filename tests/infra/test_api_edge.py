"""The API's edge as AWS will run it: the account's logging role, WAF's rules and the sign-in outputs.

Each check is a fact AWS documents that the stack once got wrong (issue 11, points 2 and 3):

- a stage with access logs needs the account's API Gateway CloudWatch role
  (https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-logging.html);
- ``AWSManagedRulesCommonRuleSet``'s ``SizeRestrictions_BODY`` blocks bodies over 8 KB
  (https://docs.aws.amazon.com/waf/latest/developerguide/aws-managed-rule-groups-baseline.html);
- behind CloudFront, WAF sees CloudFront's address, not the viewer's, and a viewer can put anything in
  X-Forwarded-For (https://docs.aws.amazon.com/waf/latest/developerguide/waf-rule-statement-forwarded-ip-address.html).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdk.api import COUNTED_COMMON_RULES, MAX_BODY_BYTES, VIEWER_ADDRESS_HEADER, integer_above
from cdk.web import API_PATHS, VIEWER_ADDRESS_FUNCTION
from shared.schema import EXAMPLE_CLAIM
from tests.infra.conftest import Synthesized

# SizeRestrictions_BODY's documented limit (the baseline rule groups page above).
COMMON_RULE_SET_BODY_LIMIT = 8 * 1024


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def only(template: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    [(name, resource)] = resources(template, kind).items()
    return name, resource


def depends_on(template: dict[str, Any], name: str, target: str, seen: set[str] | None = None) -> bool:
    """Whether CloudFormation creates ``target`` before ``name`` (DependsOn or a reference, transitively)."""
    seen = set() if seen is None else seen
    if name in seen:
        return False
    seen.add(name)
    resource = template["Resources"][name]
    direct = resource.get("DependsOn", [])
    direct = [direct] if isinstance(direct, str) else list(direct)
    text = json.dumps(resource.get("Properties", {}))
    direct += re.findall(r'"Ref": "([A-Za-z0-9]+)"', text)
    direct += re.findall(r'"Fn::GetAtt": \["([A-Za-z0-9]+)"', text)
    direct = [d for d in direct if d in template["Resources"]]
    return target in direct or any(depends_on(template, d, target, seen) for d in direct)


# ---- point 2: the account's CloudWatch role


def test_the_stage_waits_for_the_accounts_cloudwatch_role(synthesized: Synthesized) -> None:
    template = synthesized.template_json
    account_name, account = only(template, "AWS::ApiGateway::Account")
    role_name = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    role = template["Resources"][role_name]["Properties"]
    [statement] = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in json.dumps(role["ManagedPolicyArns"])
    # The setting is the account's, shared with every other REST API in the region: kept on delete.
    assert account.get("DeletionPolicy") == "Retain"
    assert template["Resources"][role_name].get("DeletionPolicy") == "Retain"
    for stage_name, stage in resources(template, "AWS::ApiGateway::Stage").items():
        assert "AccessLogSetting" in stage["Properties"]
        assert depends_on(template, stage_name, account_name), stage_name


# ---- point 3: WAF lets batches through, refuses what the API cannot take


def web_acl_rules(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    _, acl = only(template, "AWS::WAFv2::WebACL")
    return {rule["Name"]: rule for rule in acl["Properties"]["Rules"]}


def test_a_batch_of_thirty_claims_is_over_the_common_rule_sets_limit_and_under_the_apis() -> None:
    body = json.dumps({"claims": [dict(EXAMPLE_CLAIM, claim_id=f"CLM-{i:05d}") for i in range(30)]})
    # Before: the managed rule blocked this with 403. Now the size rule's limit is the API's own.
    assert COMMON_RULE_SET_BODY_LIMIT < len(body.encode()) < MAX_BODY_BYTES
    assert re.fullmatch(integer_above(MAX_BODY_BYTES), str(len(body.encode()))) is None


def test_the_common_rule_sets_body_rule_counts_and_an_explicit_size_rule_blocks(
    synthesized: Synthesized,
) -> None:
    rules = web_acl_rules(synthesized.template_json)
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    overrides = {o["Name"]: o["ActionToUse"] for o in common["RuleActionOverrides"]}
    assert overrides == {name: {"Count": {}} for name in COUNTED_COMMON_RULES}
    assert "SizeRestrictions_BODY" in overrides
    assert rules["AWSManagedRulesCommonRuleSet"]["OverrideAction"] == {"None": {}}  # the rest still block
    size = rules["body-size"]
    # Refused as the local API refuses it: 413 in the API's error shape, not WAF's plain 403.
    assert size["Action"] == {
        "Block": {"CustomResponse": {"ResponseCode": 413, "CustomResponseBodyKey": "payload-too-large"}}
    }
    _, acl = only(synthesized.template_json, "AWS::WAFv2::WebACL")
    answer = acl["Properties"]["CustomResponseBodies"]["payload-too-large"]
    assert answer["ContentType"] == "APPLICATION_JSON"
    assert json.loads(answer["Content"])["error"]["code"] == "payload_too_large"
    match = size["Statement"]["RegexMatchStatement"]
    assert match["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert match["RegexString"] == integer_above(MAX_BODY_BYTES)
    # WAF's RegexString is at most 512 characters (RegexMatchStatement in the WAFV2 API reference).
    assert len(match["RegexString"]) <= 512
    # The size rule runs before the managed groups, so an oversized body never reaches them.
    assert size["Priority"] < rules["AWSManagedRulesCommonRuleSet"]["Priority"]


@pytest.mark.parametrize("limit", [MAX_BODY_BYTES, 10 * 1024 * 1024, 8192, 1, 9, 10, 99, 100, 1999])
def test_the_size_pattern_matches_exactly_the_lengths_above_the_limit(limit: int) -> None:
    pattern = re.compile(integer_above(limit))
    # No capturing groups: WAF's regular expressions do not support them.
    assert pattern.groups == 0
    draw = random.Random(limit)
    near = [limit + d for d in range(-1200, 1200)]
    wide = [draw.randrange(0, 10 ** (len(str(limit)) + 2)) for _ in range(3000)]
    for value in [0, *near, *wide, 10**12]:
        if value < 0:
            continue
        for text in (str(value), "00" + str(value)):
            assert (pattern.fullmatch(text) is not None) == (value > limit), (limit, text)
    for junk in ("", "-1", "1e9", " 7000000", "7000000 ", "abc"):
        assert pattern.fullmatch(junk) is None


def test_the_web_pages_calls_are_counted_per_viewer_and_direct_calls_per_address(
    synthesized: Synthesized,
) -> None:
    rules = web_acl_rules(synthesized.template_json)
    direct = rules["rate-per-address"]["Statement"]["RateBasedStatement"]
    viewer = rules["rate-per-viewer"]["Statement"]["RateBasedStatement"]
    assert direct["AggregateKeyType"] == "IP"
    assert viewer["AggregateKeyType"] == "FORWARDED_IP"
    assert viewer["ForwardedIPConfig"]["HeaderName"] == VIEWER_ADDRESS_HEADER
    # The two rules split the traffic: the page's key (added by CloudFront) selects the viewer rule.
    assert direct["ScopeDownStatement"] == {"NotStatement": {"Statement": viewer["ScopeDownStatement"]}}
    by_key = viewer["ScopeDownStatement"]["ByteMatchStatement"]
    assert by_key["FieldToMatch"] == {"SingleHeader": {"Name": "x-api-key"}}


def test_every_api_path_through_cloudfront_sets_the_viewers_address(synthesized: Synthesized) -> None:
    template = synthesized.template_json
    function_name, function = only(template, "AWS::CloudFront::Function")
    assert function["Properties"]["FunctionCode"] == VIEWER_ADDRESS_FUNCTION
    _, distribution = only(template, "AWS::CloudFront::Distribution")
    behaviors = {
        b["PathPattern"]: b for b in distribution["Properties"]["DistributionConfig"]["CacheBehaviors"]
    }
    assert set(API_PATHS) <= set(behaviors)
    for path in API_PATHS:
        [association] = behaviors[path]["FunctionAssociations"]
        assert association["EventType"] == "viewer-request"
        assert association["FunctionARN"] == {"Fn::GetAtt": [function_name, "FunctionARN"]}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is needed to run the CloudFront function")
def test_the_cloudfront_function_replaces_what_the_viewer_claims(tmp_path: Path) -> None:
    """Run in Node with the event shape CloudFront Functions document
    (https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/functions-event-structure.html)."""
    event = {
        "version": "1.0",
        "viewer": {"ip": "198.51.100.7"},
        "request": {
            "method": "POST",
            "uri": "/api/v1/predict",
            "headers": {
                VIEWER_ADDRESS_HEADER: {"value": "203.0.113.1"},  # a viewer's attempt to pick its bucket
                "x-forwarded-for": {"value": "203.0.113.1"},
            },
        },
    }
    script = tmp_path / "run.js"
    script.write_text(
        VIEWER_ADDRESS_FUNCTION
        + f"handler({json.dumps(event)}).then((r) => process.stdout.write(JSON.stringify(r)));\n",
        encoding="utf-8",
    )
    answer = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True, timeout=30)
    request = json.loads(answer.stdout)
    assert request["headers"][VIEWER_ADDRESS_HEADER] == {"value": "198.51.100.7"}
    assert request["uri"] == "/api/v1/predict"


# ---- signing in from the web page: the hosted login's client and the outputs a user needs


def test_claims_handlers_sign_in_with_the_code_grant_and_pkce(synthesized: Synthesized) -> None:
    template = synthesized.template_json
    clients = {
        r["Properties"].get("ClientName"): r["Properties"]
        for r in resources(template, "AWS::Cognito::UserPoolClient").values()
    }
    people = clients["claims-handlers"]
    assert people["AllowedOAuthFlows"] == ["code"]
    assert people.get("GenerateSecret") in (None, False)  # a public client: PKCE, no secret in the page
    distribution_name, _ = only(template, "AWS::CloudFront::Distribution")
    [callback] = people["CallbackURLs"]
    assert {"Fn::GetAtt": [distribution_name, "DomainName"]} in callback["Fn::Join"][1]  # the page's own
    outputs = template["Outputs"]
    for name in (
        "WebPageUrl",
        "ApiUrl",
        "AuthorizeUrl",
        "TokenUrl",
        "ClaimsHandlersClientId",
        "ClaimsSystemClientId",
    ):
        assert name in outputs, name
    assert "/oauth2/authorize" in json.dumps(outputs["AuthorizeUrl"]["Value"])
    assert "/oauth2/token" in json.dumps(outputs["TokenUrl"]["Value"])


def test_the_web_acl_is_a_valid_create_web_acl_request(synthesized: Synthesized) -> None:
    """The ACL's properties are CreateWebACL's parameters: botocore's wafv2 model checks them (custom
    responses, rule actions, statements), intrinsics replaced by plain names."""
    from tests.infra.test_aws_conformance import request_errors

    _, acl = only(synthesized.template_json, "AWS::WAFv2::WebACL")

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1 and next(iter(value)).startswith(("Fn::", "Ref")):
                return "resolved-at-deploy"
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    params = plain(acl["Properties"])
    params.pop("Tags", None)
    assert request_errors("wafv2", "CreateWebACL", {"Name": "claims-risk", **params}) == []
