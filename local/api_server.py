"""The local API: the API Lambda's own handler behind an HTTP server on 127.0.0.1."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from local.api_gateway import create_local_api
from shared.adapters.endpoint import HttpEndpoint

# Locally there is no X-Ray daemon and no CloudWatch agent reading metric logs.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")


def create_api(model_url: str) -> Starlette:
    from lambdas.api import handler  # after the environment above is set

    handler.use_endpoint(HttpEndpoint(model_url))

    async def home(_: Request) -> Response:
        return RedirectResponse("/swagger")

    return create_local_api(handler.lambda_handler, extra_routes=[Route("/", home, methods=["GET"])])
