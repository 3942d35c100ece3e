"""Sustained load on the local chain: `claims-risk up` under 32 concurrent clients for 60 s.

The whole system runs as a user runs it (``python -m local.cli up``: supervisor, model server, API
environments, drop-folder watcher, alarm sink) on a model trained here and published as the pipeline
publishes it, with the rate limit off and every other setting at its default (capture on). 32
clients, each on its own keep-alive connection, score varied claims through ``/api/v1/predict``:
the figures are errors (any answer but 200, or a dropped connection), p50/p95/p99 latency,
requests per second, and the resident memory of every process `up` runs, after a warm-up and again
after the load (growth shows a leak).

The peer is the same chain with one API environment, which is how the local API ran before it
executed invocations concurrently: requests then queue behind each other. The clients share the
machine's two cores with the servers, so the throughput is a lower bound.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from benchmarks.bench_serving import as_body, claim_records, prepare_channels
from benchmarks.harness import Figure, judged
from local.jobs import REPO_ROOT, run_training
from local.pipeline_runner import LocalModelStore
from local.servers import free_port, stop, wait_until_ready
from step_functions.pipeline import step

NAME = "load"
HOST = "127.0.0.1"
CLIENTS = 32
SECONDS = 60.0
PEER_SECONDS = 30.0  # the peer's figures settle sooner; a shorter run keeps `make bench` bounded
WARMUP_S = 35.0  # every API process serves and the alarm sink evaluates once before memory is read
DISTINCT_CLAIMS = 5_000
API_ENVIRONMENTS = 4  # `up`'s default (CLAIMS_RISK_API_ENVIRONMENTS)

# Targets from the issue (on this 2-core machine, throttle off).
RPS_TARGET = 500.0
MEMORY_GROWTH_LIMIT_PCT = 5.0


@dataclass
class Outcomes:
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def drive(port: int, token: str, bodies: list[bytes], clients: int, seconds: float) -> Outcomes:
    """``clients`` threads posting claims over keep-alive connections for ``seconds``."""
    outcomes = Outcomes()
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    started = time.monotonic()
    stop_at = started + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        index = offset
        while time.monotonic() < stop_at:
            body = bodies[index % len(bodies)]
            index += clients
            sent = time.perf_counter()
            error: str | None = None
            try:
                connection.request("POST", "/api/v1/predict", body, headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    error = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as failure:
                error = type(failure).__name__
                connection.close()
                connection = http.client.HTTPConnection(HOST, port, timeout=30)
            elapsed_ms = (time.perf_counter() - sent) * 1000.0
            with lock:
                outcomes.latencies_ms.append(elapsed_ms)
                if error:
                    outcomes.errors[error] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    outcomes.seconds = time.monotonic() - started
    return outcomes


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `up` and every process it runs."""
    root = psutil.Process(pid)
    total = 0
    for member in [root, *root.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:  # a process ended between listing and reading
            continue
    return total / 2**20


@dataclass
class Run:
    label: str
    environments: int
    outcomes: Outcomes
    rss_before_mb: float
    rss_after_mb: float

    @property
    def per_second(self) -> float:
        return len(self.outcomes.latencies_ms) / self.outcomes.seconds

    @property
    def growth_pct(self) -> float:
        return (self.rss_after_mb / self.rss_before_mb - 1.0) * 100.0


def run_up(home: Path, environments: int, bodies: list[bytes], seconds: float) -> Run:
    token = secrets.token_urlsafe(24)
    api_port, model_port = free_port(), free_port()
    env = {
        **os.environ,
        "CLAIMS_RISK_HOME": str(home),
        "CLAIMS_RISK_API_TOKEN": token,
        "CLAIMS_RISK_THROTTLE_PER_MINUTE": "0",
        "CLAIMS_RISK_API_ENVIRONMENTS": str(environments),
        "NO_COLOR": "1",
    }
    log = home / f"up-{environments}.log"
    command = [sys.executable, "-m", "local.cli", "up", "--api-port", str(api_port)]
    command += ["--model-port", str(model_port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_ready(f"http://{HOST}:{api_port}/health", process, timeout_s=300)
        drive(api_port, token, bodies, CLIENTS, WARMUP_S)  # imports and caches settle
        time.sleep(1.0)
        before = tree_rss_mb(process.pid)
        outcomes = drive(api_port, token, bodies, CLIENTS, seconds)
        time.sleep(1.0)
        after = tree_rss_mb(process.pid)
    finally:
        stop(process, timeout_s=30)
    plural = "s" if environments > 1 else ""
    return Run(
        f"claims-risk up, {environments} API environment{plural}", environments, outcomes, before, after
    )


def figures_of(run: Run, judge: bool) -> list[Figure]:
    outcomes = run.outcomes
    errors = sum(outcomes.errors.values())
    detail = {
        "clients": CLIENTS,
        "seconds": round(outcomes.seconds, 1),
        "requests": len(outcomes.latencies_ms),
        "errors_by_kind": dict(outcomes.errors),
        "mean_ms": round(statistics.fmean(outcomes.latencies_ms), 2),
    }
    memory = {"before_mb": round(run.rss_before_mb, 1), "after_mb": round(run.rss_after_mb, 1)}
    subject = run.label
    if not judge:
        return [
            Figure(NAME, subject, "errors", errors, "requests", extra=detail),
            Figure(NAME, subject, "throughput", run.per_second, "req/s", extra=detail),
            *(Figure(NAME, subject, f"p{q} latency", outcomes.percentile(q), "ms") for q in (50, 95, 99)),
            Figure(NAME, subject, "memory growth", run.growth_pct, "%", extra=memory),
        ]
    return [
        judged(NAME, subject, "errors", errors, "requests", 0, extra=detail),
        judged(NAME, subject, "throughput", run.per_second, "req/s", RPS_TARGET, at_least=True, extra=detail),
        *(Figure(NAME, subject, f"p{q} latency", outcomes.percentile(q), "ms") for q in (50, 95, 99)),
        Figure(NAME, subject, "servers' memory before", run.rss_before_mb, "MB"),
        Figure(NAME, subject, "servers' memory after", run.rss_after_mb, "MB"),
        judged(NAME, subject, "memory growth", run.growth_pct, "%", MEMORY_GROWTH_LIMIT_PCT, extra=memory),
    ]


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        channels = prepare_channels(root)
        trained = run_training(step("train"), channels, {}, root / "train")
        bodies = [as_body(record) for record in claim_records(DISTINCT_CLAIMS, seed=43)]
        runs = []
        for environments, seconds in ((API_ENVIRONMENTS, SECONDS), (1, PEER_SECONDS)):
            home = root / f"home-{environments}"
            LocalModelStore(home / "models").publish(trained.outputs["model"])  # served, not retrained
            runs.append(run_up(home, environments, bodies, seconds))
            print(f"  {runs[-1].label}: {runs[-1].per_second:,.0f} req/s", flush=True)
    ours, peer = runs
    return figures_of(ours, judge=True) + figures_of(peer, judge=False)


if __name__ == "__main__":
    for figure in run():
        print(json.dumps(figure.__dict__, default=str))
