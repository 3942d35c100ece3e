"""The local model server: SageMaker's serving contract on 127.0.0.1, backed by the inference script.

Serves ``GET /ping``, ``POST /invocations`` and sagemaker-runtime's
``POST /endpoints/<name>/invocations``, so an unchanged boto3 client reaches it when
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` points here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sagemaker_jobs.inference import inference
from shared.ml.features import InvalidFeatureValue
from shared.ml.model import RiskModel
from shared.payloads import PayloadError

log = logging.getLogger("claims_risk.model_server")


def _error(status: int, code: str, message: str, as_runtime: bool) -> Response:
    if not as_runtime:
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
    # SageMaker runtime answers 424 with the container's status and message inside a ModelError.
    body = {
        "__type": "ModelError",
        "message": f"Received client error ({status}) from primary",
        "OriginalStatusCode": status,
        "OriginalMessage": json.dumps({"error": {"code": code, "message": message}}),
    }
    return JSONResponse(body, status_code=424, headers={"x-amzn-ErrorType": "ModelError"})


def create_model_server(model_dir: str | Path) -> Starlette:
    model: RiskModel = inference.model_fn(str(model_dir))  # loaded once, before the first request

    async def ping(_: Request) -> Response:
        return Response(status_code=200)  # liveness only: never touches the model

    async def invocations(request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type", "application/json")
        accept = request.headers.get("accept", "application/json")
        # On sagemaker-runtime's path, errors take the runtime's shape so boto3 raises ModelError.
        as_runtime = "endpoint_name" in request.path_params
        try:
            payload, media = inference.handle(model, body, content_type, accept)
        except (PayloadError, InvalidFeatureValue) as error:
            return _error(400, "invalid_input", str(error), as_runtime)
        except Exception:
            log.exception("prediction failed")
            return _error(500, "model_error", "prediction failed", as_runtime)
        return Response(payload, media_type=media, headers={"X-Model-Version": model.version})

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/endpoints/{endpoint_name}/invocations", invocations, methods=["POST"]),
        ]
    )
