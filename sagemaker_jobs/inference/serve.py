"""The image's ``serve`` program: SageMaker runs ``docker run IMAGE serve`` for an endpoint or a batch
transform, with the model unpacked in ``/opt/ml/model``, and sends ``GET /ping`` and
``POST /invocations`` to port 8080 (``SAGEMAKER_BIND_TO_PORT`` when it says otherwise).

SageMaker captures the endpoint's traffic and publishes its metrics itself, so the server runs
without the local capture and metrics sink that ``claims-risk up`` gives it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

OPT_ML = "/opt/ml"


def model_dir(env: dict[str, str]) -> Path:
    return Path(env.get("SM_MODEL_DIR", str(Path(env.get("SM_OPT_ML", OPT_ML)) / "model")))


def main() -> int:
    import uvicorn

    from sagemaker_jobs.inference.model_server import create_model_server

    env = dict(os.environ)
    # Inside the container every interface; a test of the installed image binds to 127.0.0.1.
    host = env.get("CLAIMS_RISK_SERVE_HOST", "0.0.0.0")
    port = int(env.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    app = create_model_server(model_dir(env), monitoring=None)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
