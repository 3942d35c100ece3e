"""Serving: our model server against MLflow's scoring server on the same model, and the local API chain.

The model is the one users run: ``make run``'s (``claims-risk train``, the quick pipeline on 100k
generated claims, seed 0), or the model published in ``CLAIMS_RISK_BENCH_HOME`` (the pipeline's
champion after ``claims-risk pipeline run``, say); the table names it (:mod:`benchmarks.shipped_model`).
It is served three ways, all on 127.0.0.1:

- **our model server** (``sagemaker_jobs/inference/model_server.py``), started as ``claims-risk up``
  starts it (``claims-risk serve-model`` following the published model, data capture on, its own data
  folder): JSON → records → encoder → XGBoost score and exact TreeSHAP contributions (from per-leaf
  tables, ``shared/ml/treeshap.py``) → top five factors per claim → JSON, in uvicorn's event loop;
- **MLflow's scoring server** (``mlflow models serve --env-manager local``) with a pyfunc model that
  wraps the very same :class:`RiskModel` and calls the same ``predict_records``, so both sides compute
  scores *and* risk factors; MLflow adds its parsing of ``dataframe_records`` into a DataFrame and
  runs the prediction in a worker thread;
- **the local chain**: the local API (API Gateway adapter → the Lambda handler, with bearer auth,
  pydantic validation and the audit log line) calling our model server over HTTP.

The in-process floor (no HTTP) shows what the model and our code around it cost, with XGBoost's own
TreeSHAP beside ours; the cost of scoring with risk factors is also given for a Random Forest and a
Keras network trained on the same claims, each with its own explanation method. Every client is
the same small keep-alive HTTP client (``http.client``, one connection per thread) running on the same
two CPUs as the server it measures, so throughput is a lower bound of what a server would do alone;
the server's CPU time per request gives its ceiling on a free core. Latency targets are judged with
one client (no queueing), throughput with several. Other load on the machine skews every figure, so
the CPU time that other processes used while measuring is reported too.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import itertools
import json
import logging
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

from benchmarks.harness import Figure, judged
from benchmarks.shipped_model import published_model
from local.jobs import REPO_ROOT, run_processing, run_training
from local.servers import free_port, start_api_server, start_model_server, stop, wait_until_ready
from sagemaker_jobs.inference import inference
from shared.feature_spec import TARGET_COLUMN
from shared.ml.families import XGBoostFamily
from shared.ml.features import columns_from_records, input_columns
from shared.ml.model import RiskModel, unpack_model
from shared.ml.synthetic import generate_claims, write_claims
from step_functions.pipeline import step

NAME = "serving"
HOST = "127.0.0.1"
TRAIN_ROWS = 20_000  # the other families' models (their cost per claim, beside XGBoost's)
SINGLE_REQUESTS = 2_000  # per server and per client setting
BATCH_SIZE = 1_000
BATCHES = 30
LOAD_THREADS = 4  # modest: the client shares the machine's two CPUs with the server
WARMUP_REQUESTS = 50
PHASE_CAP_S = 45.0  # a slow server is measured on the requests it answered in this time
FLOOR_REPEATS = 500
FAMILY_REPEATS = 200
QUIET_CORES = 0.2  # other processes' CPU use above this makes the run's figures suspect

# Targets from the issues (13: p95 1 ms and 10x MLflow, on the shipped model with capture on).
SINGLE_P95_MS = 1.0
SINGLE_RPS = 1_000.0
BATCH_P95_MS = 50.0
RATIO_OVER_MLFLOW = 10.0
CHAIN_P95_MS = 10.0

Server = subprocess.Popen[bytes]


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (a child started inside inherits them)."""
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
        # Fields a request left out are NaN in the DataFrame; the encoder reads NaN as missing.
        records: list[dict[str, Any]] = model_input.to_dict("records")  # type: ignore[assignment]
        return self.model.predict_records(records)


def save_pyfunc(model_dir: Path, target: Path) -> Path:
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "MLFLOW_UV_AUTO_DETECT": "false"}
    mlflow_log = logging.getLogger("mlflow")
    level = mlflow_log.level
    mlflow_log.setLevel(logging.ERROR)  # its warnings (pickled class, no signature) are expected here
    try:
        with environment(quiet):
            mlflow.pyfunc.save_model(
                str(target),
                python_model=RiskModelPyfunc(),
                artifacts={"model_dir": str(model_dir)},
                pip_requirements=["mlflow"],  # skips requirement inference, which loads the model again
            )
    finally:
        mlflow_log.setLevel(level)
    return target


def start_mlflow_server(model_path: Path, port: int, log_file: Path) -> Server:
    venv_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        # The pickled pyfunc class lives in this module, so the server must import the repository.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PATH": os.pathsep.join([str(venv_bin), os.environ.get("PATH", "")]),  # it execs `uvicorn`
    }
    command = [str(venv_bin / "mlflow"), "models", "serve", "-m", str(model_path)]
    command += ["--env-manager", "local", "-h", HOST, "-p", str(port), "-w", "1"]
    with log_file.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(command, cwd=log_file.parent, env=env, stdout=out, stderr=out)


# ---------------------------------------------------------------------------------------------
# The servers' processes and the machine's CPU time.


def tree_cpu_s(process: Server) -> float:
    """CPU seconds used so far by a server and its children (``mlflow models serve`` runs uvicorn)."""
    try:
        root = psutil.Process(process.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for member in members:
        try:
            times = member.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (stolen time counts: it was not ours to use)."""
    times = psutil.cpu_times()._asdict()
    return float(sum(times.get(k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal")))


class Servers:
    """The servers this benchmark started; each is stopped with its children, its CPU time kept."""

    def __init__(self) -> None:
        self.running: list[Server] = []
        self.stopped_cpu_s = 0.0

    def add(self, process: Server, ready_url: str, log_file: Path, timeout_s: float = 60.0) -> Server:
        self.running.append(process)
        try:
            wait_until_ready(ready_url, process, timeout_s)
        except (RuntimeError, TimeoutError) as error:  # the log is in a folder about to be deleted
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
            raise RuntimeError(f"{error}; its log ends:\n{tail}") from None
        return process

    def stop(self, process: Server) -> None:
        self.stopped_cpu_s += tree_cpu_s(process)
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        stop(process)
        for child in children:  # only what this server started, by pid
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()
        self.running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.running)):
            self.stop(process)

    def cpu_s(self) -> float:
        return self.stopped_cpu_s + sum(tree_cpu_s(p) for p in self.running)


@dataclass
class CpuWindow:
    """Busy CPU time on the machine while measuring, less this benchmark's own (client and servers)."""

    wall: float
    busy: float
    own: float

    @classmethod
    def start(cls) -> CpuWindow:
        return cls(time.perf_counter(), busy_cpu_s(), time.process_time())

    def other_cores(self, servers_cpu_s: float) -> float:
        own = time.process_time() - self.own + servers_cpu_s
        return max(0.0, busy_cpu_s() - self.busy - own) / (time.perf_counter() - self.wall)


# ---------------------------------------------------------------------------------------------
# Model and claims.


def prepare_channels(root: Path) -> dict[str, Path]:
    data = write_claims(generate_claims(TRAIN_ROWS, seed=41), root / "raw" / "claims.csv")
    processed = run_processing(step("validate"), {"raw": data.parent}, root / "validate")
    return {k: processed.outputs[k] for k in ("train", "validation", "test")}


def train_model(root: Path, channels: dict[str, Path], family: str = "xgboost") -> Path:
    """A model of the family with the pipeline's default hyperparameters."""
    trained = run_training(step("train"), channels, {"model_family": family}, root / f"train-{family}")
    return unpack_model(trained.outputs["model"], root / f"model-{family}")


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
    server_cpu_s: float  # CPU time the server processes used meanwhile
    client_cpu_s: float = 0.0  # CPU time this process (the client threads) used meanwhile

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    @property
    def per_second(self) -> float:
        return self.answered / self.seconds

    @property
    def server_cpu_ms(self) -> float:
        """Server CPU per request."""
        return self.server_cpu_s * 1000.0 / self.answered

    @property
    def client_cpu_ms(self) -> float:
        """Client CPU per request (the benchmark's own threads)."""
        return self.client_cpu_s * 1000.0 / self.answered

    def ceiling(self, cpus: int = 2) -> float:
        """Requests a second this server could answer with its clients on the same ``cpus``: its one
        event-loop thread gives at most 1 / (its CPU a request), and server and clients share the
        CPUs. Its CPU a request is nearly all the event loop's (the capture thread's is small)."""
        return min(1000.0 / self.server_cpu_ms, cpus * 1000.0 / (self.server_cpu_ms + self.client_cpu_ms))

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q))

    def describe(self) -> str:
        capped = f"; capped at {PHASE_CAP_S:.0f} s" if self.answered < self.requested else ""
        return (
            f"{self.answered} requests{capped}; p50 {self.percentile(50):.2f}, p95 "
            f"{self.percentile(95):.2f}, p99 {self.percentile(99):.2f} ms; {self.per_second:,.0f} req/s; "
            f"server CPU {self.server_cpu_ms:.2f} ms per request"
        )


def drive(
    port: int,
    path: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, str],
    threads: int,
    servers: Sequence[Server] = (),
) -> Load:
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
    cpu_before = sum(tree_cpu_s(s) for s in servers)
    client_before = time.process_time()
    started = time.perf_counter()
    for each in workers:
        each.start()
    for each in workers:
        each.join()
    seconds = time.perf_counter() - started
    client_cpu = time.process_time() - client_before
    cpu = sum(tree_cpu_s(s) for s in servers) - cpu_before
    if failures:
        raise RuntimeError(failures[0])
    return Load([x for per_thread in latencies for x in per_thread], seconds, len(bodies), cpu, client_cpu)


def require(condition: object, message: str) -> None:
    """A check that the servers do the same work (not an assert: it must hold under -O too)."""
    if not condition:
        raise RuntimeError(message)


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
    servers: Sequence[Server],
    headers: Mapping[str, str] | None = None,
) -> ServerRun:
    sent = dict(headers or {})
    drive(port, path, singles[:WARMUP_REQUESTS], sent, 1)  # first-request costs are not steady state
    latency = drive(port, path, singles, sent, 1, servers)
    throughput = drive(port, path, singles, sent, LOAD_THREADS, servers)
    batch = None
    if batches:
        drive(port, path, batches[:2], sent, 1)
        batch = drive(port, path, batches, sent, 1, servers)
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
    if not isinstance(model.family, XGBoostFamily):
        raise TypeError("the serving benchmark compares TreeSHAP implementations on an XGBoost model")
    native_treeshap = model.family.native_contributions
    return [
        ("score only (booster margin + calibration)", lambda: model.probabilities(matrix)),
        (
            "XGBoost's own TreeSHAP (pred_contribs), for comparison",
            lambda: native_treeshap(matrix),
        ),
        (
            "score + exact TreeSHAP from per-leaf tables (ours, one pass)",
            lambda: model.family.explain(matrix),
        ),
        ("predict_records (encode, score, explain, top 5)", lambda: model.predict_records(rows)),
        (
            "parse + predict_records + render (the server's work minus HTTP)",
            lambda: inference.handle(model, body, "application/json", "application/json"),
        ),
    ]


def family_figures(model_dirs: Mapping[str, Path], records: list[dict[str, Any]]) -> list[Figure]:
    """What scoring with risk factors costs for each model family (in-process, no HTTP), each with
    its own explanation method, so that a family the tuner picks is not a surprise in production."""
    figures = []
    for family, model_dir in model_dirs.items():
        model = RiskModel.load(model_dir)
        for label, rows, repeats in (
            ("1 claim", records[:1], FAMILY_REPEATS),
            (f"{BATCH_SIZE} claims", records[:BATCH_SIZE], BATCHES),
        ):
            samples = time_ms(functools.partial(model.predict_records, rows), repeats)
            figures.append(
                Figure(
                    NAME,
                    f"{family} (default hyperparameters, {TRAIN_ROWS:,} claims)",
                    f"{label}: predict_records with risk factors, median",
                    statistics.median(samples),
                    "ms",
                    notes=f"p95 {np.percentile(samples, 95):.2f} ms over {repeats} calls; "
                    f"{model.manifest.explanation_method}",
                )
            )
    return figures


def floor_figures(model: RiskModel, records: list[dict[str, Any]], which: str) -> list[Figure]:
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
                    notes=f"p95 {np.percentile(samples, 95):.3f} ms over {repeats} calls; {which}",
                )
            )
    return figures


# ---------------------------------------------------------------------------------------------
# Figures.


def handle_ms(figures: Sequence[Figure]) -> float:
    """The in-process floor's median for one claim, all the server's work but HTTP."""
    metric = "1 claim: parse + predict_records + render (the server's work minus HTTP), median"
    return next(f.value for f in figures if f.metric == metric)


def server_figures(subject: str, run: ServerRun, what: str, *, with_targets: bool) -> list[Figure]:
    """Latency with one client, throughput with several, batches; the issue's targets for ours only."""
    p95 = run.latency.percentile(95)
    load = run.throughput
    throughput_notes = (
        f"p95 under load {load.percentile(95):.2f} ms. The client threads share the 2 CPUs with the server"
    )
    figures = [
        Figure(NAME, subject, "1 claim, 1 client: p50", run.latency.percentile(50), "ms", notes=what),
        judged(NAME, subject, "1 claim, 1 client: p95", p95, "ms", SINGLE_P95_MS)
        if with_targets
        else Figure(NAME, subject, "1 claim, 1 client: p95", p95, "ms"),
        Figure(NAME, subject, "1 claim, 1 client: p99", run.latency.percentile(99), "ms"),
        judged(
            NAME,
            subject,
            f"1 claim, {LOAD_THREADS} clients: throughput",
            load.per_second,
            "req/s",
            SINGLE_RPS,
            at_least=True,
            notes=throughput_notes,
            extra={"load": load.describe()},
        )
        if with_targets
        else Figure(
            NAME,
            subject,
            f"1 claim, {LOAD_THREADS} clients: throughput",
            load.per_second,
            "req/s",
            notes=throughput_notes,
            extra={"load": load.describe()},
        ),
        Figure(
            NAME,
            subject,
            f"1 claim, {LOAD_THREADS} clients: server CPU per request",
            load.server_cpu_ms,
            "ms",
            notes=f"all the server's threads: {load.server_cpu_s / load.seconds:.2f} cores busy at "
            f"{load.per_second:,.0f} req/s. Python runs one thread at a time in a worker, so CPU beyond "
            "1 core is native threads, mostly XGBoost's OpenMP threads spin-waiting between calls",
        ),
        Figure(
            NAME,
            subject,
            f"1 claim, {LOAD_THREADS} clients: ceiling on these 2 CPUs",
            load.ceiling(),
            "req/s",
            notes=f"min(1 / server CPU a request, 2 CPUs / (server + client CPU a request)); the client's "
            f"{LOAD_THREADS} threads used {load.client_cpu_ms:.3f} ms of CPU a request",
        ),
    ]
    if run.batch is not None:
        batch_p95 = run.batch.percentile(95)
        metric = f"batch of {BATCH_SIZE}, 1 client: p95"
        figures += [
            Figure(NAME, subject, f"batch of {BATCH_SIZE}, 1 client: p50", run.batch.percentile(50), "ms"),
            judged(NAME, subject, metric, batch_p95, "ms", BATCH_P95_MS, extra={"load": run.batch.describe()})
            if with_targets
            else Figure(NAME, subject, metric, batch_p95, "ms", extra={"load": run.batch.describe()}),
        ]
    return figures


# ---------------------------------------------------------------------------------------------


def trees_of(model_dir: Path) -> int:
    booster = getattr(RiskModel.load(model_dir).family, "booster", None)
    return int(booster.num_boosted_rounds()) if booster is not None else 0


def run() -> list[Figure]:
    servers = Servers()
    shipped = published_model()
    model_dir = shipped.model_dir
    which = shipped.describe()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        channels = prepare_channels(root)
        records = claim_records(SINGLE_REQUESTS + BATCH_SIZE, seed=42)
        singles, batch_rows = records[:SINGLE_REQUESTS], records[SINGLE_REQUESTS:]
        single_bodies = [as_body(r) for r in singles]
        others = {family: train_model(root, channels, family) for family in ("random_forest", "keras")}
        window = CpuWindow.start()
        figures = floor_figures(RiskModel.load(model_dir), records, which)
        figures += family_figures({"xgboost": train_model(root, channels), **others}, records)
        try:
            # Our model server as `claims-risk up` runs it: following the published model, capturing
            # every exchange (the default), but into a data folder of its own.
            home = root / "home"
            home.mkdir()
            (home / "models").symlink_to(shipped.home / "models", target_is_directory=True)
            ours_port = free_port()
            ours_url = f"http://{HOST}:{ours_port}"
            log = root / "model_server.log"
            as_up = {"CLAIMS_RISK_HOME": str(home)}
            model_server = servers.add(
                start_model_server(None, HOST, ours_port, log, as_up), f"{ours_url}/ping", log
            )
            answer = post_json(ours_port, "/invocations", single_bodies[0], {})
            require(answer["predictions"][0]["risk_factors"], "our server returned no risk factors")
            ours = measure(
                ours_port, "/invocations", single_bodies, [as_body(batch_rows)] * BATCHES, [model_server]
            )

            # MLflow's scoring server on the same artifact.
            mlflow_port = free_port()
            log = root / "mlflow.log"
            mlflow_server = servers.add(
                start_mlflow_server(save_pyfunc(model_dir, root / "mlflow_model"), mlflow_port, log),
                f"http://{HOST}:{mlflow_port}/ping",
                log,
                timeout_s=120,  # MLflow's server imports much more before it answers
            )
            answer = post_json(mlflow_port, "/invocations", as_body({"dataframe_records": singles[:1]}), {})
            require(answer["predictions"][0]["risk_factors"], "MLflow's server returned no risk factors")
            peer = measure(
                mlflow_port,
                "/invocations",
                [as_body({"dataframe_records": [r]}) for r in singles],
                [as_body({"dataframe_records": batch_rows})] * BATCHES,
                [mlflow_server],
            )
            servers.stop(mlflow_server)  # free the CPUs for the chain

            # The local chain: API adapter → Lambda handler → our model server.
            token = secrets.token_urlsafe(32)
            api_port = free_port()
            api_env = {
                "CLAIMS_RISK_API_TOKEN": token,
                "CLAIMS_RISK_THROTTLE_PER_MINUTE": "0",  # unthrottled: the benchmark is one client
                "CLAIMS_RISK_HOME": str(root / "home"),  # the API's data folder, not the user's
            }
            with environment(api_env):  # the API server inherits this process's environment
                log = root / "api.log"
                api_server = servers.add(
                    start_api_server(ours_url, HOST, api_port, log), f"http://{HOST}:{api_port}/health", log
                )
            auth = {"Authorization": f"Bearer {token}"}
            answer = post_json(api_port, "/api/v1/predict", single_bodies[0], auth)
            require(answer["risk_factors"], "the API returned no risk factors")
            chain = measure(api_port, "/api/v1/predict", single_bodies, [], [api_server, model_server], auth)
        finally:
            servers.stop_all()
        other_cores = window.other_cores(servers.cpu_s())

    figures.append(
        Figure(
            NAME,
            f"model measured: {which}",
            "trees",
            float(trees_of(model_dir)),
            "trees",
            notes=shipped.label,
        )
    )
    figures += server_figures(
        "our model server",
        ours,
        "as claims-risk up runs it (capture on). JSON → encode → XGBoost score + TreeSHAP → top 5 factors "
        f"→ JSON, in the event loop. Model: {which}",
        with_targets=True,
    )
    figures += server_figures(
        "MLflow scoring server",
        peer,
        "JSON → pandas DataFrame → to_dict → the same predict_records (score + TreeSHAP + top 5 "
        "factors) in a worker thread → MLflow's JSON",
        with_targets=False,
    )
    figures.append(
        judged(
            NAME,
            "our model server / MLflow",
            f"1 claim, {LOAD_THREADS} clients: throughput ratio",
            ours.throughput.per_second / peer.throughput.per_second,
            "x",
            RATIO_OVER_MLFLOW,
            at_least=True,
            notes="same model, same work (score + risk factors), one uvicorn worker each, ours capturing "
            "every exchange as shipped (MLflow's server captures nothing); server CPU "
            f"per request {ours.throughput.server_cpu_ms:.2f} ms (ours), "
            f"{peer.throughput.server_cpu_ms:.2f} ms (MLflow)",
        )
    )
    # What 10x would take, against what these 2 CPUs allow: ours' ceiling from its measured CPU a
    # request, and, lower still in cost, the same work in process (no HTTP, no client).
    needed = RATIO_OVER_MLFLOW * peer.throughput.per_second
    in_process_ms = handle_ms(figures)
    figures.append(
        Figure(
            NAME,
            "our model server / MLflow",
            f"1 claim: ceiling of ours on these 2 CPUs / MLflow's throughput (10x needs {needed:,.0f} req/s)",
            ours.throughput.ceiling() / peer.throughput.per_second,
            "x",
            notes=f"ours' ceiling {ours.throughput.ceiling():,.0f} req/s (server CPU "
            f"{ours.throughput.server_cpu_ms:.3f} ms + client CPU {ours.throughput.client_cpu_ms:.3f} ms a "
            f"request); the work in process without HTTP (parse, validate, score, TreeSHAP, top 5, render) "
            f"takes {in_process_ms:.3f} ms, at most {1000.0 / in_process_ms:,.0f} req/s on the event loop's "
            "one core even if HTTP and the clients cost nothing",
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
                notes="both are dominated by the same TreeSHAP call",
            )
        )
    chain_subject = "local chain (API → handler → model server)"
    figures += [
        Figure(
            NAME,
            chain_subject,
            "1 claim, 1 client: p50",
            chain.latency.percentile(50),
            "ms",
            notes="bearer auth, pydantic validation, audit log line, then HTTP to the model server",
        ),
        judged(
            NAME,
            chain_subject,
            "1 claim, 1 client: p95",
            chain.latency.percentile(95),
            "ms",
            CHAIN_P95_MS,
            extra={"load": chain.latency.describe()},
        ),
        Figure(NAME, chain_subject, "1 claim, 1 client: p99", chain.latency.percentile(99), "ms"),
        Figure(
            NAME,
            chain_subject,
            f"1 claim, {LOAD_THREADS} clients: throughput",
            chain.throughput.per_second,
            "req/s",
            notes=f"p95 under load {chain.throughput.percentile(95):.2f} ms; client, API and model server "
            f"share 2 CPUs; API + model server CPU {chain.throughput.server_cpu_ms:.2f} ms per request",
            extra={"load": chain.throughput.describe()},
        ),
        Figure(
            NAME,
            "machine",
            "other processes' CPU use while measuring",
            other_cores,
            "cores",
            f"<= {QUIET_CORES:g} cores",
            other_cores <= QUIET_CORES,
            notes="a validity check, not a product target: busy CPU time on the machine less this "
            "benchmark's (client and servers). Above the limit the figures are contended: run again on a "
            "quiet machine",
        ),
    ]
    return figures
