"""SageMaker's data capture format, written by the local model server and read by the drift job.

One JSON line per request: the request and the response as the endpoint saw them, with the
event's id and time, under ``<root>/<endpoint>/<variant>/yyyy/mm/dd/hh/``, as SageMaker writes them
to S3. Reading the same format in both places keeps the local and AWS monitors one program.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EVENT_VERSION = "0"


def _encoding(content_type: str) -> str:
    media = content_type.split(";", maxsplit=1)[0].strip().lower()
    if media in {"application/json", "application/jsonlines"}:
        return "JSON"
    if media == "text/csv":
        return "CSV"
    return "BASE64"


def _encoded(body: bytes, content_type: str) -> tuple[str, str]:
    encoding = _encoding(content_type)
    if encoding == "BASE64":
        return base64.b64encode(body).decode("ascii"), encoding
    return body.decode("utf-8", errors="replace"), encoding


def capture_record(
    request: bytes,
    request_type: str,
    response: bytes,
    response_type: str,
    *,
    event_id: str,
    when: datetime,
) -> dict[str, Any]:
    """One exchange as a capture line's JSON object."""
    input_data, input_encoding = _encoded(request, request_type)
    output_data, output_encoding = _encoded(response, response_type)
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": request_type,
                "mode": "INPUT",
                "data": input_data,
                "encoding": input_encoding,
            },
            "endpointOutput": {
                "observedContentType": response_type,
                "mode": "OUTPUT",
                "data": output_data,
                "encoding": output_encoding,
            },
        },
        "eventMetadata": {
            "eventId": event_id,
            "inferenceTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        },
        "eventVersion": EVENT_VERSION,
    }


def capture_folder(root: Path, endpoint: str, variant: str, when: datetime) -> Path:
    """Where SageMaker would put the exchange: one folder an hour."""
    return root / endpoint / variant / when.astimezone(UTC).strftime("%Y/%m/%d/%H")


@dataclass(frozen=True)
class CapturedExchange:
    event_id: str
    inference_time: str
    request: bytes
    request_type: str
    response: bytes
    response_type: str


def _decoded(part: dict[str, Any]) -> bytes:
    data = str(part.get("data", ""))
    if part.get("encoding") == "BASE64":
        return base64.b64decode(data)
    return data.encode("utf-8")


def parse_capture_line(line: str) -> CapturedExchange:
    """One capture line; raises ValueError when it is not in SageMaker's capture format."""
    try:
        row = json.loads(line)
        data = row["captureData"]
        request, response = data["endpointInput"], data.get("endpointOutput", {})
        return CapturedExchange(
            event_id=str(row.get("eventMetadata", {}).get("eventId", "")),
            inference_time=str(row.get("eventMetadata", {}).get("inferenceTime", "")),
            request=_decoded(request),
            request_type=str(request.get("observedContentType", "")),
            response=_decoded(response),
            response_type=str(response.get("observedContentType", "")),
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"not a data capture line: {error}") from error


def iter_capture_files(root: Path) -> Iterator[Path]:
    """Capture files under ``root`` in time order (their folders are yyyy/mm/dd/hh)."""
    yield from sorted(p for p in root.rglob("*.jsonl") if p.is_file())
