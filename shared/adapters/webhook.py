"""A notifier that posts to an on-call webhook (Slack's incoming webhooks, or anything reading the same JSON).

The body is Slack-compatible: ``text`` is the line people read, ``attachments`` lay the details out as
fields, and ``details`` holds the message as it was given, for receivers that are programs.
Standard library only, so a Lambda could use it too.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

# Slack's attachment colours; a state outside these gets the neutral one.
_COLOURS: Final = {"ALARM": "danger", "OK": "good"}
_TEXT_FIELDS: Final = ("reason",)  # shown after the subject in the one-line text


class WebhookError(RuntimeError):
    """The webhook could not be reached or refused the post."""


def webhook_payload(subject: str, message: Mapping[str, Any]) -> dict[str, Any]:
    details = json.loads(json.dumps(dict(message), default=str))  # what the receiver gets is plain JSON
    extra = " ".join(str(message[k]) for k in _TEXT_FIELDS if message.get(k))
    fields = [
        {"title": key, "value": value if isinstance(value, str) else json.dumps(value), "short": True}
        for key, value in details.items()
        if key not in _TEXT_FIELDS
    ]
    state = str(message.get("new_state", message.get("state", "")))
    return {
        "text": f"{subject}: {extra}" if extra else subject,
        "attachments": [{"color": _COLOURS.get(state, "warning"), "title": subject, "fields": fields}],
        "details": details,
    }


class WebhookNotifier:
    """:class:`shared.ports.Notifier` over an HTTP(S) webhook; raises :class:`WebhookError` on failure."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        if urllib.parse.urlsplit(url).scheme not in {"http", "https"}:
            raise ValueError(f"a webhook URL is http(s), not {url!r}")
        self.url, self.timeout_s = url, timeout_s

    def notify(self, subject: str, message: Mapping[str, Any]) -> None:
        body = json.dumps(webhook_payload(subject, message)).encode("utf-8")
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except OSError as error:  # URLError and HTTPError (a 4xx or 5xx answer) are OSErrors
            raise WebhookError(f"webhook post failed: {error}") from error
