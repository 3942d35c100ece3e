"""Notifier adapters: SNS in AWS; a JSON Lines log (plus a console callback) locally."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

SNS_SUBJECT_LIMIT: Final = 100  # SNS rejects longer subjects


class SnsNotifier:
    """Publishes to an SNS topic; the message is JSON so e-mail readers and machines both get it."""

    def __init__(self, topic_arn: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("sns")
        self.topic_arn = topic_arn
        self.client = client

    def notify(self, subject: str, message: Mapping[str, Any]) -> None:
        self.client.publish(
            TopicArn=self.topic_arn,
            Subject=subject[:SNS_SUBJECT_LIMIT],
            Message=json.dumps(message, indent=2, default=str),
        )


class LocalNotifier:
    """Appends each notification to a JSON Lines file and hands it to an optional callback."""

    def __init__(
        self, log_file: Path, on_notify: Callable[[str, Mapping[str, Any]], None] | None = None
    ) -> None:
        self.log_file = log_file
        self.on_notify = on_notify

    def notify(self, subject: str, message: Mapping[str, Any]) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        record = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "subject": subject, **message}
        with self.log_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        if self.on_notify:
            self.on_notify(subject, message)
