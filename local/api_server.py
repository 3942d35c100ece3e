"""The local API: the API Lambda's own handler behind an HTTP server on 127.0.0.1.

The handler's ports get their local adapters (the model server over HTTP, the local model store, a
background pipeline run), and a local authorizer stands in for Cognito and the usage plan.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from local.api_gateway import create_local_api
from local.auth import LocalAuthorizer, authorizer_from_env
from local.supervisor import SUPERVISED_ENV, SupervisedProcesses
from shared.adapters.endpoint import HttpEndpoint
from shared.adapters.model_catalog import LocalModelCatalog
from shared.adapters.pipeline_starter import LocalPipelineStarter

WEB_DIR = Path(__file__).resolve().parent / "web"  # static files; in AWS they go to an S3 bucket

# Locally there is no X-Ray daemon and no CloudWatch agent reading metric logs.
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")


def create_api(model_url: str, home: Path, authorizer: LocalAuthorizer | None = None) -> Starlette:
    from lambdas.api import handler  # after the environment above is set

    handler.use_ports(
        endpoint=HttpEndpoint(model_url),
        catalog=LocalModelCatalog(home / "models"),
        starter=LocalPipelineStarter(home),
        # Under `claims-risk up`, /health reports each process the supervisor keeps alive.
        processes=SupervisedProcesses(home) if os.environ.get(SUPERVISED_ENV) else None,
    )

    async def root(_: Request) -> Response:
        return RedirectResponse("/ui/")

    return create_local_api(
        handler.lambda_handler,
        extra_routes=[
            Route("/", root, methods=["GET"]),
            Mount("/ui", app=StaticFiles(directory=WEB_DIR, html=True), name="ui"),
        ],
        authorizer=authorizer or authorizer_from_env(home),
        shed_when_busy=bool(os.environ.get(SUPERVISED_ENV)),
    )
