"""Notifications reach on-call: SNS in AWS (stubbed here), a JSON Lines log locally."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
from botocore.stub import ANY, Stubber

from shared.adapters.notify import SNS_SUBJECT_LIMIT, LocalNotifier, SnsNotifier

TOPIC = "arn:aws:sns:eu-west-1:123456789012:claims-risk-on-call"


def test_sns_gets_a_short_subject_and_the_whole_outcome_as_json() -> None:
    client = boto3.client("sns", region_name="eu-west-1")
    subject = "claims-risk: challenger " + "x" * 200 + " rejected"
    with Stubber(client) as stub:
        stub.add_response(
            "publish",
            {"MessageId": "1"},
            {"TopicArn": TOPIC, "Subject": subject[:SNS_SUBJECT_LIMIT], "Message": ANY},
        )
        SnsNotifier(TOPIC, client).notify(subject, {"status": "rejected", "reason": "fairness"})
        stub.assert_no_pending_responses()


def test_local_notifications_append_and_reach_the_callback(tmp_path: Path) -> None:
    seen: list[str] = []
    notifier = LocalNotifier(tmp_path / "n" / "notifications.jsonl", lambda subject, _m: seen.append(subject))
    notifier.notify("first", {"status": "promoted"})
    notifier.notify("second", {"status": "rejected", "reason": "champion"})
    records = [json.loads(line) for line in (tmp_path / "n" / "notifications.jsonl").read_text().splitlines()]
    assert [r["subject"] for r in records] == ["first", "second"] == seen
    assert records[1]["reason"] == "champion" and "at" in records[1]
