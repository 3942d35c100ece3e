"""The API Lambda: routing, validation and OpenAPI by Powertools; scoring by :mod:`shared.scoring`.

The same ``lambda_handler`` runs in AWS Lambda behind API Gateway, behind the local API
(:mod:`local.api_server`) and in tests with API Gateway proxy events. Only the wiring of the ports
differs: from :class:`shared.settings.ApiSettings`, read at the cold start in Lambda (a missing
setting fails it, by name), and at the first request elsewhere.
"""

# No "from __future__ import annotations": Powertools reads the route signatures at runtime.

import time
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

from shared import auth, strict_json
from shared.adapters.endpoint import endpoint_from
from shared.adapters.model_catalog import catalog_from
from shared.adapters.pipeline_starter import starter_from
from shared.ports import (
    EndpointError,
    EndpointRejectedInput,
    EndpointUnavailable,
    ModelCatalog,
    ModelCatalogError,
    ModelEndpoint,
    PipelineStarter,
    PipelineStartError,
    RuntimeProcesses,
)
from shared.schema import (
    BatchRequest,
    BatchResponse,
    Claim,
    HealthResponse,
    ModelCard,
    PredictionResponse,
    RetrainRequest,
    RetrainResponse,
    repeated_claim_ids,
)
from shared.scoring import score_claims
from shared.settings import ApiSettings

API_VERSION = "1.0.0"
CORRELATION_HEADER = "X-Correlation-Id"

# In Lambda, read once here: a missing setting fails the cold start, naming its variable.
COLD_START_SETTINGS = ApiSettings.at_cold_start()


def function_settings() -> ApiSettings:
    """The cold start's settings; outside Lambda, the environment's now, with the local defaults."""
    return COLD_START_SETTINGS or ApiSettings.load()


logger = Logger(service="claims-risk-api")
# Only botocore (the endpoint, catalog and pipeline calls): patching every library X-Ray knows
# imports each of them at cold start.
tracer = Tracer(service="claims-risk-api", patch_modules=("botocore",))
metrics = Metrics(namespace=function_settings().metrics_namespace, service="claims-risk-api")
# Bodies are parsed strictly: deep nesting, huge integers, NaN and 1e400 are a 400, never a crash.
app = APIGatewayRestResolver(enable_validation=True, json_body_deserializer=strict_json.loads)
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
    """The ports, built from the settings on first use; tests and the local runtime replace them."""

    endpoint: ModelEndpoint | None = None
    catalog: ModelCatalog | None = None
    starter: PipelineStarter | None = None
    processes: RuntimeProcesses | None = None  # only the local runtime has processes of its own


def use_endpoint(endpoint: ModelEndpoint | None) -> None:
    _Wiring.endpoint = endpoint


def use_ports(
    *,
    endpoint: ModelEndpoint | None = None,
    catalog: ModelCatalog | None = None,
    starter: PipelineStarter | None = None,
    processes: RuntimeProcesses | None = None,
) -> None:
    _Wiring.endpoint, _Wiring.catalog, _Wiring.starter = endpoint, catalog, starter
    _Wiring.processes = processes


def model_endpoint() -> ModelEndpoint:
    if _Wiring.endpoint is None:
        _Wiring.endpoint = endpoint_from(function_settings())
    return _Wiring.endpoint


def model_catalog() -> ModelCatalog:
    if _Wiring.catalog is None:
        _Wiring.catalog = catalog_from(function_settings())
    return _Wiring.catalog


def pipeline_starter() -> PipelineStarter:
    if _Wiring.starter is None:
        _Wiring.starter = starter_from(function_settings())
    return _Wiring.starter


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


def caller() -> str:
    """Who asked: the token's subject or client id, else the API key's id, else the source address."""
    context = app.current_event.request_context
    claims = context.authorizer.claims or {}
    return str(
        claims.get("sub")
        or claims.get("client_id")
        or context.identity.api_key_id
        or context.identity.source_ip
        or "unknown"
    )


def with_correlation_id(router: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    cid = correlation_id()
    logger.set_correlation_id(cid)
    response = next_middleware(router)
    response.headers[CORRELATION_HEADER] = cid
    return response


def with_scope_check(router: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """A second check behind the gateway's authorizer: the route's scope must be in the token.

    Every scoped route has the Cognito authorizer in front (cdk/api.py), so its claims are always
    there in AWS; a request without them (an API key alone, a misconfigured route) has no scope and
    is refused, never waved through."""
    event = router.current_event
    path = event.resource if event.resource not in ("/{proxy+}", "/") else event.path
    needed = auth.required_scope(event.http_method, path)
    if needed is None:
        return next_middleware(router)
    claims = event.request_context.authorizer.claims or {}
    if needed not in auth.granted_scopes(claims.get("scope")):
        what = "the credential lacks" if claims else "the request carries no token with"
        return error_response(HTTPStatus.FORBIDDEN, "forbidden", f"{what} the {needed} scope")
    return next_middleware(router)


def array_body_refusal() -> Response[Any] | None:
    """Every body this API takes is one JSON object. Powertools' validation reads a JSON array sent
    to a route taking one model as its first element and drops the rest (its list normalization is
    meant for repeated query values), so an array is refused, whether its first element is valid
    (the middleware below) or not (the validation error's handler). API Gateway's request validator
    refuses it in AWS too (the models are JSON schemas of type object)."""
    event = app.current_event
    try:
        body = event.decoded_body if event.body else None
    except (UnicodeDecodeError, ValueError):
        return None  # not text: the validation's own answer says so
    if body is None or body.lstrip()[:1] != "[":
        return None
    single = event.path.rstrip("/").endswith("/api/v1/predict")
    hint = ' To score several claims, POST {"claims": [...]} to /api/v1/predict/batch.' if single else ""
    return error_response(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "validation_error",
        f"the body is a JSON array; this route takes one JSON object.{hint}",
        [{"field": "body", "message": "must be a JSON object, not an array", "type": "model_type"}],
    )


def with_object_body(router: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response[Any]:
    return array_body_refusal() or next_middleware(router)


app.use(middlewares=[with_correlation_id, with_scope_check, with_object_body])


@app.exception_handler(RequestValidationError)
def on_invalid_request(error: RequestValidationError) -> Response[Any]:
    refused = array_body_refusal()
    if refused is not None:
        return refused
    errors = error.errors()
    invalid = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if invalid is not None:
        why = str((invalid.get("ctx") or {}).get("error") or "").strip()
        message = (
            f"the request body is not valid JSON: {why[:200]}"
            if why
            else "the request body is not valid JSON"
        )
        return error_response(HTTPStatus.BAD_REQUEST, "malformed_json", message)
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


@app.exception_handler(UnicodeDecodeError)
def on_undecodable_body(_: UnicodeDecodeError) -> Response[Any]:
    return error_response(HTTPStatus.BAD_REQUEST, "malformed_body", "the request body is not UTF-8 text")


@app.exception_handler(RequestUnsupportedContentType)
def on_unsupported_content_type(_: RequestUnsupportedContentType) -> Response[Any]:
    return error_response(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send the claim as application/json"
    )


class RepeatedClaimIds(Exception):
    def __init__(self, repeats: dict[int, int]) -> None:
        super().__init__(f"{len(repeats)} repeated claim ids")
        self.repeats = repeats


@app.exception_handler(RepeatedClaimIds)
def on_repeated_claim_ids(error: RepeatedClaimIds) -> Response[Any]:
    details = [
        {"field": f"claims.{i}.claim_id", "message": f"duplicate of claims.{j}.claim_id", "type": "duplicate"}
        for i, j in sorted(error.repeats.items())
    ]
    return error_response(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "validation_error",
        f"invalid request: {len(details)} claim id(s) repeat an earlier claim's",
        details,
    )


@app.exception_handler(EndpointRejectedInput)
def on_endpoint_rejected(error: EndpointRejectedInput) -> Response[Any]:
    return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "rejected_by_model", str(error))


RETRY_AFTER_S = 5  # a restarting model server is back within seconds; SageMaker throttling eases too


@app.exception_handler(EndpointUnavailable)
def on_endpoint_unavailable(error: EndpointUnavailable) -> Response[Any]:
    logger.warning("model endpoint unavailable", extra={"reason": str(error)})
    response = error_response(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "model_unavailable",
        f"the model endpoint cannot take requests right now; retry in {RETRY_AFTER_S} seconds",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


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
        503: {"description": "The model endpoint cannot take requests now; retry after Retry-After seconds"},
    },
)
@tracer.capture_method
def predict(claim: Claim) -> PredictionResponse:
    [result] = score_claims(model_endpoint(), [claim])
    record_predictions([result])
    return result


@app.post(
    "/api/v1/predict/batch",
    summary="Score 1 to 1000 claims together",
    description="One invalid claim rejects the whole batch with 422; details name each claim's "
    "position and field (claims.<i>.<field>), so nothing is scored half-way.",
    responses={
        200: {"description": "One prediction per claim, in the order sent"},
        400: {"description": "The body is not valid JSON"},
        422: {
            "description": "No claims, more than 1000, an invalid claim or a repeated id; details say which"
        },
        502: {"description": "The model endpoint failed"},
        503: {"description": "The model endpoint cannot take requests now; retry after Retry-After seconds"},
    },
)
@tracer.capture_method
def predict_batch(batch: BatchRequest) -> BatchResponse:
    started = time.perf_counter()
    repeats = repeated_claim_ids([claim.claim_id for claim in batch.claims])
    if repeats:  # the claims files' rule: a claim id once per batch; the batch is refused whole
        raise RepeatedClaimIds(repeats)
    results = score_claims(model_endpoint(), batch.claims)
    record_predictions(results)
    return BatchResponse(
        predictions=results,
        count=len(results),
        high_risk_count=sum(r.risk_level == "high" for r in results),
        model_version=results[0].model_version,
        processing_time_ms=round((time.perf_counter() - started) * 1000.0, 3),
    )


def record_predictions(results: list[PredictionResponse]) -> None:
    """Metrics, and one audit line per claim: who asked, the outcome and the model version. Never
    personal fields or free text."""
    metrics.add_metric(name="ClaimsScored", unit=MetricUnit.Count, value=len(results))
    who = caller()
    for result in results:
        metrics.add_metric(name=f"Risk{result.risk_level.title()}", unit=MetricUnit.Count, value=1)
        logger.info(
            "claim scored",
            extra={
                "audit": True,
                "caller": who,
                "claim_id": result.claim_id,
                "risk_level": result.risk_level,
                "risk_score": result.risk_score,
                "model_version": result.model_version,
            },
        )


@app.get(
    "/api/v1/models/current",
    summary="The model now serving: version, family, metrics, threshold, lineage",
    responses={503: {"description": "No model is deployed yet"}},
)
def current_model() -> ModelCard:
    return ModelCard.from_manifest(dict(model_catalog().current_manifest()))


@app.post(
    "/api/v1/models/retrain",
    summary="Start the retraining pipeline",
    description="Needs the retrain scope. Returns the execution id at once; the pipeline runs on, and "
    "its gates decide whether the new model replaces the current one.",
    responses={202: {"description": "The pipeline started"}, 502: {"description": "It could not start"}},
)
def retrain(request: RetrainRequest | None = None) -> Response[RetrainResponse]:
    import datetime as dt

    started = dt.datetime.now(dt.UTC)
    execution_id = f"retrain-{started:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}"
    inputs = (request or RetrainRequest()).model_dump(exclude_none=True, exclude={"reason"})
    execution = pipeline_starter().start(execution_id, inputs)
    logger.info(
        "retraining started",
        extra={
            "audit": True,
            "caller": caller(),
            "execution": execution,
            "reason": (request or RetrainRequest()).reason,
        },
    )
    body = RetrainResponse(execution_id=execution, status="started", started_at=started)
    return Response(
        status_code=HTTPStatus.ACCEPTED.value,
        content_type=content_types.APPLICATION_JSON,
        body=body,
    )


@app.exception_handler(ModelCatalogError)
def on_no_model(error: ModelCatalogError) -> Response[Any]:
    logger.warning("no model card", extra={"reason": str(error)})
    return error_response(HTTPStatus.SERVICE_UNAVAILABLE, "no_model", "no model is deployed yet")


@app.exception_handler(PipelineStartError)
def on_pipeline_not_started(error: PipelineStartError) -> Response[Any]:
    logger.error("retraining could not start", extra={"reason": str(error)})
    return error_response(HTTPStatus.BAD_GATEWAY, "pipeline_not_started", "the retraining could not start")


@app.get("/health", summary="Liveness and dependency status")
def health() -> HealthResponse:
    import datetime as dt

    try:
        dependencies = {"model_endpoint": model_endpoint().describe()}
        status = "healthy"
    except EndpointError as error:
        dependencies, status = {"model_endpoint": f"not configured: {error}"}, "degraded"
    if _Wiring.processes is not None:  # the local runtime: each supervised process
        for name, state in _Wiring.processes.states().items():
            dependencies[f"process:{name}"] = state
            if not state.startswith("running"):
                status = "degraded"
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
