"""Serving: our model server against MLflow's scoring server on the same model, and the local API chain.

One XGBoost model is trained on generated claims and served three ways, all on 127.0.0.1:

- **our model server** (``local/model_server.py``): JSON → records → encoder → XGBoost score and
  TreeSHAP contributions → top five factors per claim → JSON;
- **MLflow's scoring server** (``mlflow models serve --env-manager local``) with a pyfunc model that
  wraps the very same :class:`RiskModel` and calls the same ``predict_records``, so both sides compute
  scores *and* risk factors; MLflow adds its own parsing of ``dataframe_records`` into a DataFrame;
- **the local chain**: the local API (API Gateway adapter → the Lambda handler, with pydantic
  validation, auth and audit logging) calling our model server over HTTP.

The in-process floor (no HTTP) shows what the model itself costs. Every client is the same small
keep-alive HTTP client (``http.client``, one connection per thread), which runs on the same two CPUs
as the server it measures: throughput figures are a lower bound of what the servers could do alone.
Latency targets are judged with one client (no queueing); throughput with several.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import psutil
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from benchmarks.harness import Figure
from local.jobs import REPO_ROOT, run_processing, run_training
from local.servers import free_port, start_api_server, start_model_server, stop, wait_until_ready
from sagemaker_jobs.inference import inference
from shared.feature_spec import TARGET_COLUMN
from shared.ml.features import columns_from_records, input_columns
from shared.ml.model import RiskModel, unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from step_functions.pipeline import step

NAME = "serving"
HOST = "127.0.0.1"
TRAIN_ROWS = 20_000  # enough for a realistic tree ensemble; serving cost does not depend on it
SINGLE_REQUESTS = 2_000  # per server and per client setting
BATCH_SIZE = 1_000
BATCHES = 30
LOAD_THREADS = 4  # modest: the client shares the machine's two CPUs with the server
WARMUP_REQUESTS = 50
PHASE_CAP_S = 45.0  # a slow server is measured on the requests it answered in this time
FLOOR_REPEATS = 500

# Targets from the issue.
SINGLE_P95_MS = 5.0
SINGLE_RPS = 1_000.0
BATCH_P95_MS = 50.0
RATIO_OVER_MLFLOW = 3.0
CHAIN_P95_MS = 10.0


# ---------------------------------------------------------------------------------------------
# The peer's model: the same RiskModel behind MLflow's pyfunc interface.


class RiskModelPyfunc(PythonModel):
    """Loads our artifact from the MLflow model's ``model_dir`` artifact; predicts like our server."""

    def load_context(self, context: PythonModelContext) -> None:
        self.model = RiskModel.load(context.artifacts["model_dir"])

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        # Columns a request left out become NaN in the DataFrame; the encoder reads NaN as missing.
        records: list[dict[str, Any]] = model_input.to_dict("records")  # type: ignore[assignment]
        return self.model.predict_records(records)


def save_pyfunc(model_dir: Path, target: Path) -> Path:
    mlflow.pyfunc.save_model(
        str(target),
        python_model=RiskModelPyfunc(),
        artifacts={"model_dir": str(model_dir)},
        pip_requirements=["mlflow"],  # skips requirement inference, which loads the model once more
    )
    return target


def start_mlflow_server(model_path: Path, port: int, log_file: Path) -> subprocess.Popen[bytes]:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        # The pickled pyfunc class lives in this module, so the server must import the repository.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]),  # it execs `uvicorn`
    }
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", str(model_path)]
    command += ["--env-manager", "local", "-h", HOST, "-p", str(port), "-w", "1"]
    out = log_file.open("ab")
    return subprocess.Popen(command, cwd=log_file.parent, env=env, stdout=out, stderr=out)


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a server and whatever it started (``mlflow models serve`` runs uvicorn as a child)."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    stop(process)
    for child in children:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        child.kill()


# ---------------------------------------------------------------------------------------------
# Model and claims.


def train_model(root: Path) -> Path:
    data = write_claims(generate_claims(TRAIN_ROWS, seed=41), root / "raw" / "claims.csv")
    processed = run_processing(step("validate"), {"raw": data.parent}, root / "validate")
    trained = run_training(
        step("train"),
        {k: processed.outputs[k] for k in ("train", "validation", "test")},
        {"model_family": "xgboost"},
        root / "train",
    )
    return unpack_model(trained.outputs["model"], root / "model")


def _json_value(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def claim_records(n: int, seed: int) -> list[dict[str, Any]]:
    """Claims as a client would send them: no label, ISO dates, missing fields left out."""
    frame = generate_claims(n, seed=seed).frame.drop(columns=[TARGET_COLUMN])
    return [
        {str(k): _json_value(v) for k, v in row.items() if not pd.isna(v)} for row in frame.to_dict("records")
    ]


def as_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------------------------
# The load generator.


@dataclass
class Load:
    latencies_ms: list[float]
    seconds: float
    requested: int

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def describe(self) -> str:
        capped = f"; capped at {PHASE_CAP_S:.0f} s" if self.answered < self.requested else ""
        return (
            f"{self.answered} requests{capped}; p50 {self.percentile(50):.2f}, p95 "
            f"{self.percentile(95):.2f}, p99 {self.percentile(99):.2f} ms; {self.per_second:,.0f} req/s"
        )


def drive(port: int, path: str, bodies: Sequence[bytes], headers: Mapping[str, str], threads: int) -> Load:
    """POST every body once, ``threads`` at a time, each thread on its own keep-alive connection."""
    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures: list[str] = []
    sent = {"Content-Type": "application/json", "Accept": "application/json", **headers}
    deadline = time.perf_counter() + PHASE_CAP_S

    def worker(out: list[float]) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=60)
        try:
            while time.perf_counter() < deadline and not failures:
                i = next(counter)  # atomic under the GIL
                if i >= len(bodies):
                    return
                started = time.perf_counter()
                connection.request("POST", path, body=bodies[i], headers=sent)
                response = connection.getresponse()
                payload = response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    failures.append(f"{path} answered {response.status}: {payload[:300]!r}")
                    return
                out.append(elapsed * 1000.0)
        finally:
            connection.close()

    workers = [threading.Thread(target=worker, args=(latencies[t],)) for t in range(threads)]
    started = time.perf_counter()
    for each in workers:
        each.start()
    for each in workers:
        each.join()
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(failures[0])
    return Load([x for per_thread in latencies for x in per_thread], seconds, len(bodies))


def post_json(port: int, path: str, body: bytes, headers: Mapping[str, str]) -> Any:
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {payload[:300]!r}")
    return json.loads(payload)


@dataclass
class ServerRun:
    latency: Load  # one client
    throughput: Load  # LOAD_THREADS clients
    batch: Load | None  # batches of BATCH_SIZE, one client


def measure(
    port: int,
    path: str,
    singles: Sequence[bytes],
    batches: Sequence[bytes],
    headers: Mapping[str, str] | None = None,
) -> ServerRun:
    sent = dict(headers or {})
    drive(port, path, singles[:WARMUP_REQUESTS], sent, 1)  # first-request costs are not steady state
    latency = drive(port, path, singles, sent, 1)
    throughput = drive(port, path, singles, sent, LOAD_THREADS)
    batch = None
    if batches:
        drive(port, path, batches[:2], sent, 1)
        batch = drive(port, path, batches, sent, 1)
    return ServerRun(latency, throughput, batch)


# ---------------------------------------------------------------------------------------------
# The in-process floor.


def time_ms(action: Callable[[], object], repeats: int) -> list[float]:
    action()  # warm-up
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        out.append((time.perf_counter() - started) * 1000.0)
    return out


def floor_stages(model: RiskModel, rows: list[dict[str, Any]]) -> list[tuple[str, Callable[[], object]]]:
    """Each stage of serving ``rows``, cumulative: the model alone, then the work around it."""
    matrix = model.encoder.transform(columns_from_records(rows, input_columns(model.encoder)), len(rows))
    body = as_body(rows[0] if len(rows) == 1 else rows)  # as our server receives them
    return [
        ("score only (booster margin + calibration)", lambda: model.probabilities(matrix)),
        (
            "score + TreeSHAP contributions",
            lambda: (model.probabilities(matrix), model.contributions(matrix)),
        ),
        ("predict_records (encode, score, explain, top 5)", lambda: model.predict_records(rows)),
        (
            "parse + predict_records + render (the server's work minus HTTP)",
            lambda: inference.handle(model, body, "application/json", "application/json"),
        ),
    ]


def floor_figures(model: RiskModel, records: list[dict[str, Any]]) -> list[Figure]:
    """Median cost per call of each stage, for one claim and for a batch, without HTTP."""
    figures = []
    for label, rows, repeats in (
        ("1 claim", records[:1], FLOOR_REPEATS),
        (f"{BATCH_SIZE} claims", records[:BATCH_SIZE], BATCHES),
    ):
        for stage, action in floor_stages(model, rows):
            samples = time_ms(action, repeats)
            figures.append(
                Figure(
                    NAME,
                    "in-process floor (no HTTP)",
                    f"{label}: {stage}, median",
                    statistics.median(samples),
                    "ms",
                    notes=f"p95 {np.percentile(samples, 95):.3f} ms over {repeats} calls",
                )
            )
    return figures


# ---------------------------------------------------------------------------------------------
# Figures.


def _over(value: float, limit: float) -> str:
    return f"misses the target by {value - limit:.2f} ({value / limit:.1f}x the limit)"


def server_figures(subject: str, run: ServerRun, what: str, *, judged: bool) -> list[Figure]:
    """Latency with one client, throughput with several, and batches; targets only where ``judged``."""
    p95 = run.latency.percentile(95)
    rps = run.throughput.per_second
    figures = [
        Figure(NAME, subject, "1 claim, 1 client: p50", run.latency.percentile(50), "ms"),
        Figure(
            NAME,
            subject,
            "1 claim, 1 client: p95",
            p95,
            "ms",
            f"<= {SINGLE_P95_MS:g} ms" if judged else "",
            (p95 <= SINGLE_P95_MS) if judged else None,
            notes=" ".join(
                filter(
                    None, [what, _over(p95, SINGLE_P95_MS) + " ms" if judged and p95 > SINGLE_P95_MS else ""]
                )
            ),
            extra={"load": run.latency.describe()},
        ),
        Figure(NAME, subject, "1 claim, 1 client: p99", run.latency.percentile(99), "ms"),
        Figure(
            NAME,
            subject,
            f"1 claim, {LOAD_THREADS} clients: throughput",
            rps,
            "req/s",
            f">= {SINGLE_RPS:,.0f} req/s" if judged else "",
            (rps >= SINGLE_RPS) if judged else None,
            notes=(
                f"p95 under load {run.throughput.percentile(95):.2f} ms; the client threads share the 2 CPUs"
                + (
                    f"; {SINGLE_RPS - rps:,.0f} req/s short ({rps / SINGLE_RPS:.0%} of target)"
                    if judged and rps < SINGLE_RPS
                    else ""
                )
            ),
            extra={"load": run.throughput.describe()},
        ),
    ]
    if run.batch is not None:
        batch_p95 = run.batch.percentile(95)
        figures += [
            Figure(NAME, subject, f"batch of {BATCH_SIZE}, 1 client: p50", run.batch.percentile(50), "ms"),
            Figure(
                NAME,
                subject,
                f"batch of {BATCH_SIZE}, 1 client: p95",
                batch_p95,
                "ms",
                f"<= {BATCH_P95_MS:g} ms" if judged else "",
                (batch_p95 <= BATCH_P95_MS) if judged else None,
                notes=_over(batch_p95, BATCH_P95_MS) + " ms"
                if judged and batch_p95 > BATCH_P95_MS
                else "with risk factors for every claim",
                extra={"load": run.batch.describe()},
            ),
        ]
    return figures


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (for a child started inside it)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run() -> list[Figure]:
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = train_model(root)
        model = RiskModel.load(model_dir)
        records = claim_records(SINGLE_REQUESTS + BATCH_SIZE, seed=42)
        singles, batch_rows = records[:SINGLE_REQUESTS], records[SINGLE_REQUESTS:]
        figures = floor_figures(model, records)
        try:
            # Our model server: a claim object per request, a list of claims per batch.
            ours_port = free_port()
            processes.append(start_model_server(model_dir, HOST, ours_port, root / "model_server.log"))
            wait_until_ready(f"http://{HOST}:{ours_port}/ping", processes[-1])
            ours_batches = [as_body(batch_rows)] * BATCHES
            check = post_json(ours_port, "/invocations", as_body(singles[0]), {})
            assert check["predictions"][0]["risk_factors"], "our server returned no risk factors"
            ours = measure(ours_port, "/invocations", [as_body(r) for r in singles], ours_batches)

            # MLflow's scoring server on the same artifact.
            mlflow_port = free_port()
            mlflow_model = save_pyfunc(model_dir, root / "mlflow_model")
            processes.append(start_mlflow_server(mlflow_model, mlflow_port, root / "mlflow.log"))
            wait_until_ready(f"http://{HOST}:{mlflow_port}/ping", processes[-1], timeout_s=120)
            check = post_json(mlflow_port, "/invocations", as_body({"dataframe_records": singles[:1]}), {})
            assert check["predictions"][0]["risk_factors"], "MLflow's server returned no risk factors"
            peer = measure(
                mlflow_port,
                "/invocations",
                [as_body({"dataframe_records": [r]}) for r in singles],
                [as_body({"dataframe_records": batch_rows})] * BATCHES,
            )
            stop_tree(processes.pop())  # free the CPUs for the chain

            # The local chain: API adapter → Lambda handler → our model server.
            token = secrets.token_urlsafe(32)
            api_port = free_port()
            api_env = {
                "CLAIMS_RISK_API_TOKEN": token,
                "CLAIMS_RISK_THROTTLE_PER_MINUTE": "0",  # unthrottled: the benchmark is one client
                "CLAIMS_RISK_HOME": str(root / "home"),  # the API's data folder, not the user's
            }
            with environment(api_env):  # the API server inherits this process's environment
                processes.append(
                    start_api_server(f"http://{HOST}:{ours_port}", HOST, api_port, root / "api.log")
                )
            wait_until_ready(f"http://{HOST}:{api_port}/health", processes[-1])
            auth = {"Authorization": f"Bearer {token}"}
            check = post_json(api_port, "/api/v1/predict", as_body(singles[0]), auth)
            assert check["risk_factors"], "the API returned no risk factors"
            chain = measure(api_port, "/api/v1/predict", [as_body(r) for r in singles], [], auth)
        finally:
            for process in reversed(processes):
                stop_tree(process)

    ours_what = "ours: JSON → encode → XGBoost score + TreeSHAP → top 5 factors → JSON, in the event loop."
    peer_what = (
        "MLflow: JSON → pandas DataFrame → to_dict → the same predict_records (score + TreeSHAP + "
        "top 5 factors) in a worker thread → MLflow's JSON."
    )
    figures += server_figures("our model server", ours, ours_what, judged=True)
    figures += server_figures("MLflow scoring server", peer, peer_what, judged=False)
    ratio = ours.throughput.per_second / peer.throughput.per_second
    figures.append(
        Figure(
            NAME,
            "our model server / MLflow",
            f"1 claim, {LOAD_THREADS} clients: throughput ratio",
            ratio,
            "x",
            f">= {RATIO_OVER_MLFLOW:g}x",
            ratio >= RATIO_OVER_MLFLOW,
            notes="same model, same work (score + risk factors), one uvicorn worker each"
            + ("" if ratio >= RATIO_OVER_MLFLOW else f"; {RATIO_OVER_MLFLOW - ratio:.2f}x short"),
        )
    )
    if ours.batch is not None and peer.batch is not None:
        figures.append(
            Figure(
                NAME,
                "our model server / MLflow",
                f"batch of {BATCH_SIZE}: p50 latency ratio (MLflow / ours)",
                peer.batch.percentile(50) / ours.batch.percentile(50),
                "x",
            )
        )
    chain_p95 = chain.latency.percentile(95)
    chain_subject = "local chain (API → handler → model server)"
    figures += [
        Figure(NAME, chain_subject, "1 claim, 1 client: p50", chain.latency.percentile(50), "ms"),
        Figure(
            NAME,
            chain_subject,
            "1 claim, 1 client: p95",
            chain_p95,
            "ms",
            f"<= {CHAIN_P95_MS:g} ms",
            chain_p95 <= CHAIN_P95_MS,
            notes="bearer auth, pydantic validation, audit log line, HTTP to the model server"
            + ("" if chain_p95 <= CHAIN_P95_MS else "; " + _over(chain_p95, CHAIN_P95_MS) + " ms"),
            extra={"load": chain.latency.describe()},
        ),
        Figure(NAME, chain_subject, "1 claim, 1 client: p99", chain.latency.percentile(99), "ms"),
        Figure(
            NAME,
            chain_subject,
            f"1 claim, {LOAD_THREADS} clients: throughput",
            chain.throughput.per_second,
            "req/s",
            notes=f"p95 under load {chain.throughput.percentile(95):.2f} ms; three processes on 2 CPUs",
            extra={"load": chain.throughput.describe()},
        ),
    ]
    return figures
