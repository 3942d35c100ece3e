"""The local model server: SageMaker's serving contract on 127.0.0.1, backed by the inference script.

Serves ``GET /ping``, ``POST /invocations`` and sagemaker-runtime's
``POST /endpoints/<name>/invocations``, so an unchanged boto3 client reaches it when
``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` points here.

Like a SageMaker endpoint it also captures requests and responses (``<home>/capture``, sampled, personal
fields dropped or pseudonymized: see :func:`shared.capture.capture_policy_from_env`) and publishes its
per-minute invocation metrics under ``AWS/SageMaker`` to ``<home>/monitoring/metrics.jsonl``, where the
local alarm sink evaluates the endpoint alarms on them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sagemaker_jobs.inference import inference
from shared.adapters.metrics import LocalMetricsSink
from shared.capture import CaptureWriter, capture_policy_from_env
from shared.feature_spec import ColumnRole
from shared.ml.features import InvalidFeatureValue
from shared.ml.model import RiskModel
from shared.payloads import PayloadError
from shared.ports import MetricDatum, MetricsPublisher
from shared.request_limits import (
    MAX_ENDPOINT_BODY_BYTES,
    MAX_TRANSFORM_BODY_BYTES,
    AsgiApp,
    BodySizeLimit,
    Receive,
    Scope,
    Send,
)

log = logging.getLogger("claims_risk.model_server")

SAGEMAKER_NAMESPACE: Final = "AWS/SageMaker"
DEFAULT_ENDPOINT: Final = "claims-risk"
VARIANT: Final = "AllTraffic"  # the one variant the AWS endpoint has
# Per minute, at most this many latency values go to the sink: all of them on a quiet minute, else
# evenly spaced quantiles, so a p95 over the minute stays within a percentile of the exact one.
LATENCY_VALUES_PER_MINUTE: Final = 100


class EndpointMetrics:
    """SageMaker's invocation metrics, aggregated per minute as SageMaker publishes them.

    :meth:`record` is a dictionary update under a lock; a background thread publishes each minute once
    it is over (and everything on :meth:`close`). Timestamps are the minute's start, as CloudWatch's.
    """

    def __init__(
        self,
        publisher: MetricsPublisher,
        *,
        variant: str = VARIANT,
        flush_interval_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.publisher, self.variant, self.clock = publisher, variant, clock
        self.flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        # (endpoint, minute start) -> [invocations, 4xx, 5xx, latencies in microseconds]
        self._minutes: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, endpoint: str, status: int, latency_us: float) -> None:
        minute = int(self.clock() // 60) * 60
        with self._lock:
            counts, latencies = self._minutes.setdefault((endpoint, minute), ([0, 0, 0], []))
            counts[0] += 1
            counts[1] += 400 <= status < 500
            counts[2] += status >= 500
            latencies.append(latency_us)
        if self._thread is None:
            self._start()

    def flush(self, everything: bool = False) -> None:
        """Publish the minutes that are over (or all of them)."""
        current = int(self.clock() // 60) * 60
        with self._lock:
            done = [key for key in self._minutes if everything or key[1] < current]
            taken = [(key, self._minutes.pop(key)) for key in done]
        data = []
        for (endpoint, minute), (counts, latencies) in sorted(taken, key=lambda item: item[0][1]):
            dims = {"EndpointName": endpoint, "VariantName": self.variant}
            when = float(minute)
            for name, value in zip(
                ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors"), counts, strict=True
            ):
                data.append(MetricDatum(name, value, dims, "Count", when))
            data += [
                MetricDatum("ModelLatency", v, dims, "Microseconds", when)
                for v in _representatives(latencies)
            ]
        if data:
            self.publisher.publish(SAGEMAKER_NAMESPACE, data)

    def close(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush(everything=True)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="endpoint-metrics", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self.flush_interval_s):
            try:
                self.flush()
            except OSError:
                log.exception("endpoint metrics could not be written")


def _representatives(values: list[float]) -> list[float]:
    if len(values) <= LATENCY_VALUES_PER_MINUTE:
        return values
    ordered = sorted(values)
    n, k = len(ordered), LATENCY_VALUES_PER_MINUTE
    return [ordered[min(n - 1, int((i + 0.5) * n / k))] for i in range(k)]


@dataclass
class ServerMonitoring:
    """What the server records besides answering: data capture and endpoint metrics (each optional)."""

    capture: CaptureWriter | None = None
    metrics: EndpointMetrics | None = None
    endpoint: str = DEFAULT_ENDPOINT  # the name /invocations is recorded under

    def close(self) -> None:
        if self.capture is not None:
            self.capture.close()
        if self.metrics is not None:
            self.metrics.close()


def monitoring_from_env(model: RiskModel, home: Path | None = None) -> ServerMonitoring:
    """Capture into ``<home>/capture`` (see :func:`shared.capture.capture_policy_from_env`; percent 0
    turns it off) and metrics into ``<home>/monitoring/metrics.jsonl``; ``CLAIMS_RISK_HOME``, default
    ``data``, as the CLI. ``CLAIMS_RISK_ENDPOINT`` names the endpoint (default claims-risk)."""
    root = home or Path(os.environ.get("CLAIMS_RISK_HOME", "data")).resolve()
    policy = capture_policy_from_env(model.spec)
    columns = [c.name for c in model.spec.columns if c.role != ColumnRole.IGNORE]
    capture = CaptureWriter(root / "capture", policy, csv_columns=columns) if policy.percent > 0 else None
    metrics = EndpointMetrics(LocalMetricsSink(root / "monitoring" / "metrics.jsonl"))
    return ServerMonitoring(capture, metrics, os.environ.get("CLAIMS_RISK_ENDPOINT", DEFAULT_ENDPOINT))


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


# sagemaker-runtime's EndpointName (botocore's service model: pattern and max 63); a name is checked
# against it before any use: it names capture folders and metric dimensions.
ENDPOINT_NAME: Final = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*")
ENDPOINT_NAME_MAX: Final = 63


def endpoint_name_problem(name: str, served: str) -> str | None:
    """Why ``name`` cannot be invoked here (SageMaker's own answers), or None when it is ``served``."""
    if len(name) > ENDPOINT_NAME_MAX or ENDPOINT_NAME.fullmatch(name) is None:
        return (
            f"1 validation error detected: Value at 'endpointName' failed to satisfy constraint: Member "
            f"must match pattern {ENDPOINT_NAME.pattern} and have length less than or equal to "
            f"{ENDPOINT_NAME_MAX}"
        )
    if name != served:
        return f"Endpoint {name} not found."
    return None


def _validation_error(message: str) -> Response:
    """sagemaker-runtime's ValidationError, which boto3 raises as ``ValidationError``."""
    headers = {"x-amzn-ErrorType": "ValidationError"}
    return JSONResponse({"message": message}, status_code=400, headers=headers)


class ServedModel:
    """The model the server scores with. With a ``source`` (where the published model is now), a
    thread looks every ``poll_s`` and, when another model is published, loads it whole and only then
    swaps it in: a request scores with the model it started with, never with a half-loaded one, and
    its answer names that model. (In AWS, SageMaker swaps an endpoint's model itself.)"""

    def __init__(
        self, model_dir: str | Path, source: Callable[[], Path | None] | None = None, poll_s: float = 1.0
    ) -> None:
        self.path = Path(model_dir).resolve()
        self.model: RiskModel = inference.model_fn(str(self.path))
        self.source, self.poll_s = source, poll_s
        self.swaps = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.source is not None and self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="model-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def refresh(self) -> bool:
        """Load and swap in the published model if it changed; whether it did."""
        published = self.source() if self.source is not None else None
        if published is None or published.resolve() == self.path:
            return False
        loaded = RiskModel.load(published)  # whole, before anyone can see it
        gc.freeze()  # as model_fn does: the collector stops rescanning the model's objects
        self.model, self.path = loaded, published.resolve()
        inference.use_model(loaded)
        self.swaps += 1
        log.warning("now serving model %s (from %s)", loaded.version, published)
        return True

    def _follow(self) -> None:
        while not self._stopped.wait(self.poll_s):
            try:
                self.refresh()
            except Exception:  # a broken publish must not stop the server: it keeps the model it has
                log.exception("the published model could not be loaded; still serving %s", self.model.version)


_FROM_ENV: Final[Literal["env"]] = "env"


def create_model_server(
    model_dir: str | Path,
    monitoring: ServerMonitoring | Literal["env"] | None = _FROM_ENV,
    *,
    follow: Callable[[], Path | None] | None = None,
    poll_s: float = 1.0,
) -> Starlette:
    """The app; ``monitoring`` defaults to what the environment configures, None records nothing.
    ``follow``: where the published model is now (see :class:`ServedModel`)."""
    served = ServedModel(model_dir, follow, poll_s)  # loaded before the first request
    model = served.model
    watch = monitoring_from_env(model) if isinstance(monitoring, str) else monitoring
    capture = watch.capture if watch else None
    metrics = watch.metrics if watch else None
    default_endpoint = watch.endpoint if watch else DEFAULT_ENDPOINT

    async def ping(_: Request) -> Response:
        return Response(status_code=200)  # liveness only: never touches the model

    async def invocations(request: Request) -> Response:
        # Reached through Starlette's routing only when the path has a root_path before it: the
        # usual request takes the shortcut (see InvocationsFirst).
        name = request.path_params.get("endpoint_name")
        if name is not None and (refusal := check_name(name)) is not None:
            return refusal
        body = await request.body()
        content_type = request.headers.get("content-type", "application/json")
        accept = request.headers.get("accept", "application/json")
        return invoke(name, body, content_type, accept)

    def invoke(name: str | None, body: bytes, content_type: str, accept: str) -> Response:
        """One invocation; ``name`` is the endpoint on sagemaker-runtime's path (already checked),
        None on ``/invocations``."""
        # On sagemaker-runtime's path, errors take the runtime's shape so boto3 raises ModelError.
        endpoint = default_endpoint if name is None else name
        as_runtime = name is not None
        started = time.perf_counter()
        model = served.model  # this request's model, whatever is swapped in meanwhile
        try:
            payload, media = inference.handle(model, body, content_type, accept)
        except (PayloadError, InvalidFeatureValue) as error:
            _record(endpoint, 400, started)
            return _error(400, "invalid_input", str(error), as_runtime)
        except Exception:
            _record(endpoint, 500, started)
            log.exception("prediction failed")
            return _error(500, "model_error", "prediction failed", as_runtime)
        _record(endpoint, 200, started)
        # Only answered requests are captured (a failed body may not be readable), once the answer
        # is on its way: the capture's encoding then overlaps the client reading it.
        after = (
            None
            if capture is None
            else BackgroundTask(captured, endpoint, body, content_type, payload, media)
        )
        return Response(
            payload, media_type=media, headers={"X-Model-Version": model.version}, background=after
        )

    async def captured(endpoint: str, body: bytes, content_type: str, payload: bytes, media: str) -> None:
        if capture is not None:
            capture.submit(endpoint, body, content_type, payload, media)

    def check_name(name: str) -> Response | None:
        # Recorded nowhere: the name is not an endpoint here.
        problem = endpoint_name_problem(name, default_endpoint)
        return None if problem is None else _validation_error(problem)

    def _record(endpoint: str, status: int, started: float) -> None:
        if metrics is not None:
            metrics.record(endpoint, status, (time.perf_counter() - started) * 1e6)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        served.start()
        yield
        served.stop()
        if watch is not None:
            watch.close()  # queued capture lines and the current minute's metrics reach the disk

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/endpoints/{endpoint_name}/invocations", invocations, methods=["POST"]),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(BodySizeLimit, max_bytes=largest_body),
            Middleware(InvocationsFirst, invoke=invoke, check_name=check_name),
        ],
    )


# sagemaker-runtime's path as Starlette's route matches it ({endpoint_name}: one path segment).
_RUNTIME_PATH: Final = re.compile(r"/endpoints/(?P<endpoint_name>[^/]+)/invocations")


class InvocationsFirst:
    """Answers ``POST /invocations`` (and sagemaker-runtime's path) before Starlette's routing, with
    the same answers as the routes: routing, the request object and the exception wrappers took
    about 0.08 ms of the server's 0.5 ms a claim. It sits inside the body-size limit; any other
    request, and a path under a root_path, goes on to the routes."""

    def __init__(
        self,
        app: AsgiApp,
        invoke: Callable[[str | None, bytes, str, str], Response],
        check_name: Callable[[str], Response | None],
    ) -> None:
        self.app, self.invoke, self.check_name = app, invoke, check_name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/invocations":
            name = None
        elif (match := _RUNTIME_PATH.fullmatch(path)) is not None:
            name = match["endpoint_name"]
        else:
            await self.app(scope, receive, send)
            return
        refusal = None if name is None else self.check_name(name)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body = await _body(receive)
        if body is None:
            return  # the client left before sending it all: nobody to answer
        content_type = accept = "application/json"  # Starlette's first header of each name, as text
        seen_type = seen_accept = False
        for key, value in scope["headers"]:
            if key == b"content-type" and not seen_type:
                content_type, seen_type = value.decode("latin-1"), True
            elif key == b"accept" and not seen_accept:
                accept, seen_accept = value.decode("latin-1"), True
        response = self.invoke(name, body, content_type, accept)
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes | None:
    """The request's body as Starlette's ``request.body()`` reads it; None on a disconnect."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def largest_body() -> int:
    """InvokeEndpoint's limit, or a transform job's largest mini-batch (MaxPayloadInMB's maximum)."""
    return MAX_TRANSFORM_BODY_BYTES if inference.in_batch_transform() else MAX_ENDPOINT_BODY_BYTES
