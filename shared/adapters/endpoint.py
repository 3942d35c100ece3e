"""Model endpoint adapters: SageMaker runtime (AWS) and HTTP to the local model server."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from shared.ports import EndpointError, EndpointRejectedInput, EndpointUnavailable, ModelEndpoint
from shared.settings import EndpointSettings

CONTENT_TYPE = "application/json"


def request_body(claims: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps({"instances": list(claims)}, separators=(",", ":"), default=str).encode()


def parse_predictions(body: bytes, expected: int) -> list[dict[str, Any]]:
    try:
        payload = json.loads(body)
    except ValueError as error:
        raise EndpointError(f"endpoint answered with invalid JSON: {error}") from None
    predictions = payload.get("predictions") if isinstance(payload, dict) else None
    if not isinstance(predictions, list) or len(predictions) != expected:
        raise EndpointError(f"endpoint answered {type(payload).__name__} without {expected} predictions")
    return predictions


class SageMakerEndpoint:
    """A SageMaker real-time endpoint through boto3's sagemaker-runtime client.

    The client honours ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``, so the same adapter also reaches the
    local model server, which serves SageMaker's ``/endpoints/<name>/invocations`` path.
    """

    def __init__(self, endpoint_name: str, client: Any | None = None) -> None:
        self.endpoint_name = endpoint_name
        if client is None:
            import boto3  # imported here: only the AWS wiring needs it

            client = boto3.client("sagemaker-runtime")
        self._client = client

    def invoke(self, claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        try:
            response = self._client.invoke_endpoint(
                EndpointName=self.endpoint_name,
                ContentType=CONTENT_TYPE,
                Accept=CONTENT_TYPE,
                Body=request_body(claims),
            )
        except self._client.exceptions.ValidationError as error:
            raise EndpointRejectedInput(str(error)) from None
        except (
            self._client.exceptions.ServiceUnavailable,
            self._client.exceptions.ModelNotReadyException,
        ) as error:
            raise EndpointUnavailable(str(error)) from None
        except self._client.exceptions.ModelError as error:
            status = int(str(error.response.get("OriginalStatusCode", 500)))
            message = str(error.response.get("OriginalMessage", error))
            if 400 <= status < 500:
                raise EndpointRejectedInput(message) from None
            raise EndpointError(f"model error: {message}") from None
        except Exception as error:  # botocore raises many types; the handler maps all to 502
            raise EndpointError(f"endpoint {self.endpoint_name} failed: {error}") from None
        return parse_predictions(response["Body"].read(), len(claims))

    def describe(self) -> str:
        return f"sagemaker:{self.endpoint_name}"


class HttpEndpoint:
    """The local model server over HTTP (``POST /invocations``)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def invoke(self, claims: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.base_url}/invocations",
            data=request_body(claims),
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:500]
            if 400 <= error.code < 500:
                raise EndpointRejectedInput(detail) from None
            if error.code == 503:
                raise EndpointUnavailable(f"model server answered 503: {detail}") from None
            raise EndpointError(f"model server answered {error.code}: {detail}") from None
        except http.client.HTTPException as error:  # the server went away mid-answer (killed, restarting)
            raise EndpointUnavailable(
                f"model server at {self.base_url} broke off its answer: {error!r}"
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, ConnectionError):  # refused or reset: down or restarting
                raise EndpointUnavailable(f"model server at {self.base_url} unreachable: {reason}") from None
            raise EndpointError(f"model server at {self.base_url} unreachable: {error}") from None
        return parse_predictions(body, len(claims))

    def describe(self) -> str:
        return f"http:{self.base_url}"


def endpoint_from(settings: EndpointSettings) -> ModelEndpoint:
    """Wiring: the local model server when the settings give its URL, else SageMaker."""
    if settings.model_url:
        return HttpEndpoint(settings.model_url)
    if not settings.endpoint_name:  # only outside Lambda, where the health check reports it
        raise EndpointError("set SAGEMAKER_ENDPOINT_NAME (AWS) or CLAIMS_RISK_MODEL_URL (local)")
    return SageMakerEndpoint(settings.endpoint_name)
