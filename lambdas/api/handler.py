"""The API Lambda: routing, validation and OpenAPI by Powertools; scoring by :mod:`shared.scoring`.

The same ``lambda_handler`` runs in AWS Lambda behind API Gateway, behind the local API
(:mod:`local.api_server`) and in tests with API Gateway proxy events. Only the wiring of the model
endpoint differs, and it is chosen from the environment at the first request.
"""

# No "from __future__ import annotations": Powertools reads the route signatures at runtime.

import os
import uuid
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.adapters.endpoint import endpoint_from_env
from shared.ports import EndpointError, EndpointRejectedInput, ModelEndpoint
from shared.schema import Claim, HealthResponse, PredictionResponse
from shared.scoring import score_claims

API_VERSION = "1.0.0"
CORRELATION_HEADER = "X-Correlation-Id"

logger = Logger(service="claims-risk-api")
tracer = Tracer(service="claims-risk-api")
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ClaimsRisk"), service="claims-risk-api"
)
app = APIGatewayRestResolver(enable_validation=True)
app.enable_swagger(
    path="/swagger",
    title="Claims risk API",
    version=API_VERSION,
    description=(
        "Scores insurance claims as low risk (auto-approve) or high risk (manual review). "
        "risk_score is the model's estimated probability that the claim is high risk; "
        "risk_factors are the claim's largest contributions to that score, computed with exact "
        "TreeSHAP for tree models and folded per readable feature. "
        "Every response carries an X-Correlation-Id header (yours, if you send one)."
    ),
)


class _Wiring:
    """The endpoint port, built from the environment on first use; tests and the local runtime replace it."""

    endpoint: ModelEndpoint | None = None


def use_endpoint(endpoint: ModelEndpoint | None) -> None:
    _Wiring.endpoint = endpoint


def model_endpoint() -> ModelEndpoint:
    if _Wiring.endpoint is None:
        _Wiring.endpoint = endpoint_from_env()
    return _Wiring.endpoint


def correlation_id() -> str:
    event = app.current_event
    given = event.headers.get(CORRELATION_HEADER)  # Powertools headers are case-insensitive
    return given or event.request_context.request_id or str(uuid.uuid4())


def error_response(
    status: HTTPStatus, code: str, message: str, details: list[Any] | None = None
) -> Response[Any]:
    """The one error shape of the API."""
    cid = correlation_id()
    body: dict[str, Any] = {"error": {"code": code, "message": message}, "correlation_id": cid}
    if details:
        body["error"]["details"] = details
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers={CORRELATION_HEADER: cid},
    )


def with_correlation_id(router: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    cid = correlation_id()
    logger.set_correlation_id(cid)
    response = next_middleware(router)
    response.headers[CORRELATION_HEADER] = cid
    return response


app.use(middlewares=[with_correlation_id])


@app.exception_handler(RequestValidationError)
def on_invalid_request(error: RequestValidationError) -> Response[Any]:
    errors = error.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(HTTPStatus.BAD_REQUEST, "malformed_json", "the request body is not valid JSON")
    details = [
        {
            # loc is ("body", "claim_amount") for a body field; the field path is what a client needs.
            "field": ".".join(str(part) for part in e["loc"][1:]) or str(e["loc"][0]),
            "message": e.get("msg", "invalid value"),
            "type": e.get("type", "value_error"),
        }
        for e in errors
    ]
    fields = ", ".join(sorted({d["field"] for d in details}))
    return error_response(
        HTTPStatus.UNPROCESSABLE_ENTITY, "validation_error", f"invalid request: {fields}", details
    )


@app.exception_handler(RequestUnsupportedContentType)
def on_unsupported_content_type(_: RequestUnsupportedContentType) -> Response[Any]:
    return error_response(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the claim as application/json"
    )


@app.exception_handler(EndpointRejectedInput)
def on_endpoint_rejected(error: EndpointRejectedInput) -> Response[Any]:
    return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "rejected_by_model", str(error))


@app.exception_handler(EndpointError)
def on_endpoint_error(error: EndpointError) -> Response[Any]:
    logger.error("model endpoint failed", extra={"reason": str(error)})
    return error_response(
        HTTPStatus.BAD_GATEWAY, "model_unavailable", "the model endpoint could not score the claim"
    )


@app.not_found
def on_not_found(_: NotFoundError) -> Response[Any]:
    return error_response(HTTPStatus.NOT_FOUND, "not_found", f"no route for {app.current_event.path}")


@app.post(
    "/api/v1/predict",
    summary="Score one claim",
    responses={
        200: {"description": "The claim's risk level, score, confidence and top risk factors"},
        400: {"description": "The body is not valid JSON"},
        422: {"description": "The claim breaks the schema or a business rule; details name the field"},
        502: {"description": "The model endpoint failed"},
    },
)
@tracer.capture_method
def predict(claim: Claim) -> PredictionResponse:
    [result] = score_claims(model_endpoint(), [claim])
    metrics.add_metric(name="ClaimsScored", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=f"Risk{result.risk_level.title()}", unit=MetricUnit.Count, value=1)
    # Audit line: identifiers and outcome only, never personal fields or free text.
    logger.info(
        "claim scored",
        extra={
            "claim_id": result.claim_id,
            "risk_level": result.risk_level,
            "model_version": result.model_version,
            "caller": app.current_event.request_context.identity.source_ip,
        },
    )
    return result


@app.get("/health", summary="Liveness and dependency status")
def health() -> HealthResponse:
    import datetime as dt

    try:
        dependencies = {"model_endpoint": model_endpoint().describe()}
        status = "healthy"
    except EndpointError as error:
        dependencies, status = {"model_endpoint": f"not configured: {error}"}, "degraded"
    return HealthResponse(
        status=status,
        version=API_VERSION,
        timestamp=dt.datetime.now(dt.UTC),
        dependencies=dependencies,
    )


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
