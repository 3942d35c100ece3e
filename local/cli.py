"""``claims-risk``: the embedded runtime's command line.

``claims-risk up`` is what ``make run`` does: generate data, validate, train, then serve the model
server and the API on 127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from shared.decision import DecisionCosts
from shared.lake import DEFAULT_REPLAY_DAYS
from shared.schema import EXAMPLE_CLAIM

if TYPE_CHECKING:
    from step_functions.pipeline import PipelineInputs

console = Console(highlight=False)
Command = TypeVar("Command", bound=Callable[..., None])
DEFAULT_ROWS = 100_000
EXIT_REJECTED = 2  # the run finished, but the gates kept the champion


def home() -> Path:
    return Path(os.environ.get("CLAIMS_RISK_HOME", "data")).resolve()


def tracking_uri() -> str:
    """MLflow tracking: a sqlite file in the data folder unless CLAIMS_RISK_MLFLOW_URI says otherwise."""
    return os.environ.get("CLAIMS_RISK_MLFLOW_URI", f"sqlite:///{home() / 'mlflow.db'}")


@click.group(help="Claims risk triage, offline on this machine.")
def main() -> None:
    pass


@main.command(help="Write synthetic claims (CSV or Parquet, by the file's suffix).")
@click.option("--rows", type=click.IntRange(min=1), default=DEFAULT_ROWS, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--drift", type=float, default=0.0, show_default=True, help="0 = training population")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="default: <home>/raw/claims.csv")
def generate(rows: int, seed: int, drift: float, out: Path | None) -> None:
    _generate(rows, seed, drift, out or home() / "raw" / "claims.csv")


def _generate(rows: int, seed: int, drift: float, out: Path) -> Path:
    from shared.ml.synthetic import generate_claims, write_claims

    with console.status(f"generating {rows:,} claims (seed {seed}, drift {drift})"):
        started = time.perf_counter()
        claims = generate_claims(rows, seed=seed, drift=drift)
        write_claims(claims, out, truth=home() / "truth" / f"{out.stem}.parquet")
    share = float(claims.frame["is_high_risk"].mean())
    console.print(
        f"[green]✔[/] {rows:,} claims ({share:.1%} high risk) → {out} in {time.perf_counter() - started:.1f}s"
    )
    return out


def _pipeline_options(default_trials: int, default_cv_folds: int) -> Callable[[Command], Command]:
    def decorate(command: Command) -> Command:
        options = [
            click.option(
                "--data",
                type=click.Path(exists=True, path_type=Path),
                default=None,
                help="raw claims file or folder (default: generated claims)",
            ),
            click.option(
                "--source",
                default="",
                help="raw claims from the claims lake instead: athena:<query> or glue:<table> "
                '(e.g. "glue:training_claims"); answered by DuckDB over <home>/lake offline',
            ),
            click.option(
                "--spec", default="claims", show_default=True, help="built-in spec name or spec JSON path"
            ),
            click.option(
                "--rows",
                type=click.IntRange(min=100),
                default=DEFAULT_ROWS,
                show_default=True,
                help="claims to generate when --data is not given",
            ),
            click.option(
                "--trials",
                type=click.IntRange(min=0),
                default=default_trials,
                show_default=True,
                help="tuning trials across the model families (0 = XGBoost defaults)",
            ),
            click.option(
                "--timeout",
                "timeout_s",
                type=click.FloatRange(min=1),
                default=480.0,
                show_default=True,
                help="tuning budget in seconds",
            ),
            click.option(
                "--cv-folds",
                type=click.IntRange(min=0, max=10),
                default=default_cv_folds,
                show_default=True,
                help="stratified folds of the evaluation (0 skips it)",
            ),
            click.option(
                "--hp", "hyperparameters", multiple=True, help="final-training override, NAME=VALUE"
            ),
            click.option(
                "--run-id",
                default=None,
                help="name of the run folder (default: the start time); the API's retrain sets it",
            ),
            click.option(
                "--replay-days",
                type=click.IntRange(min=0, max=90),
                default=DEFAULT_REPLAY_DAYS,
                show_default=True,
                help="days of captured traffic the evaluation replays through champion and challenger",
            ),
            click.option(
                "--gate",
                "gates",
                multiple=True,
                metavar="NAME=VALUE",
                help="set a promotion gate for this run, over the spec's gates section: a metric's floor "
                "(roc_auc=0.75, pr_auc_lift=2, recall_lift=1.5) or ceiling (false_negative_rate=0.4), "
                "'off' to drop it, or a gate setting (min_selection_rate_ratio=0.6); repeatable",
            ),
            click.option(
                "--max-flip-rate",
                type=click.FloatRange(min=0, max=1),
                default=None,
                help="gate: at most this share of the replayed claims may change decision (default: no gate)",
            ),
            click.option(
                "--cost-missed",
                type=click.FloatRange(min=0, min_open=True),
                default=DecisionCosts().missed_high_risk,
                show_default=True,
                help="cost of auto-approving a high-risk claim",
            ),
            click.option(
                "--cost-review",
                type=click.FloatRange(min=0, min_open=True),
                default=DecisionCosts().needless_review,
                show_default=True,
                help="cost of a needless manual review",
            ),
        ]
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def _inputs(options: dict[str, Any]) -> PipelineInputs:
    from pydantic import ValidationError

    from shared.gates import GateConfig
    from step_functions.pipeline import PipelineInputs

    malformed = [h for h in options["hyperparameters"] if "=" not in h]
    if malformed:
        raise click.BadParameter(f"expected NAME=VALUE, got {malformed}", param_hint="--hp")
    malformed = [g for g in options["gates"] if "=" not in g]
    if malformed:
        raise click.BadParameter(f"expected NAME=VALUE, got {malformed}", param_hint="--gate")
    # The run's own gate settings: applied over the spec's gates section when the gates step judges.
    settings: dict[str, Any] = {
        name.strip(): value for name, value in (g.split("=", 1) for g in options["gates"])
    }
    if options["max_flip_rate"] is not None:
        settings.setdefault("max_replay_flip_rate", options["max_flip_rate"])
    if options["source"] and options["data"]:
        raise click.UsageError("give --data or --source, not both")
    try:
        return PipelineInputs(
            spec=options["spec"],
            source=options["source"],
            tuning_trials=options["trials"],
            tuning_timeout_s=options["timeout_s"],
            cv_folds=options["cv_folds"],
            hyperparameters=dict(h.split("=", 1) for h in options["hyperparameters"]),
            costs=DecisionCosts(
                missed_high_risk=options["cost_missed"], needless_review=options["cost_review"]
            ),
            replay_days=options["replay_days"],
            gates=GateConfig(overrides=settings),
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise click.UsageError(problems) from None


@main.command(
    help="Run the retraining pipeline without tuning or cross-validation (quick). Exit 2 when the gates "
    "keep the champion."
)
@_pipeline_options(default_trials=0, default_cv_folds=0)
def train(**options: Any) -> None:
    _train(options["data"], options["rows"], _inputs(options), options["run_id"])


@main.group(help="The retraining pipeline.")
def pipeline() -> None:
    pass


@pipeline.command(
    "run",
    help="Run every step locally: validate, features, tune, train, evaluate, gates, register, deploy, "
    "notify. Exit 2 when the gates keep the champion.",
)
@_pipeline_options(default_trials=20, default_cv_folds=5)
def pipeline_run(**options: Any) -> None:
    _train(options["data"], options["rows"], _inputs(options), options["run_id"])


def _train(data: Path | None, rows: int, inputs: PipelineInputs, run_id: str | None = None) -> Path:
    from local.jobs import JobFailed
    from local.pipeline_runner import local_services, run_pipeline
    from step_functions.pipeline import STEPS

    truth = None
    if inputs.source:
        data = None
    elif data is None:
        data = home() / "raw" / "claims.csv"
        if not data.exists():
            _generate(rows, 0, 0.0, data)
        truth = home() / "truth" / f"{data.stem}.parquet"
    run_dir = home() / "runs" / (run_id or time.strftime("%Y%m%d-%H%M%S"))
    total = len(STEPS)
    timings: dict[str, float] = {}

    def on_step(step: object, state: str) -> None:
        name = getattr(step, "name", "?")
        index = [s.name for s in STEPS].index(name) + 1
        if state == "started":
            timings[name] = time.perf_counter()
            console.print(f"[bold]▶ [{index}/{total}] {name}[/]: {getattr(step, 'description', '')}")
        elif state == "finished":
            console.print(f"[green]✔ {name}[/] in {time.perf_counter() - timings[name]:.1f}s")
        elif state == "skipped":
            console.print(f"[yellow]↷ [{index}/{total}] {name} skipped[/]: a gate stopped the promotion")
        else:
            console.print(f"[red]✘ {name} failed[/]")

    def on_line(line: str) -> None:
        style = "cyan" if line.startswith("#metric") else "dim"
        console.print(f"  [{style}]{escape(line)}[/]", soft_wrap=True)

    def on_notify(subject: str, _message: Mapping[str, Any]) -> None:
        console.print(f"[magenta]✉ {escape(subject)}[/] (logged to {home() / 'notifications.jsonl'})")

    services = local_services(home(), tracking_uri(), on_notify)
    try:
        run = run_pipeline(
            data,
            run_dir,
            inputs,
            services=services,
            truth=truth,
            tracking_uri=tracking_uri(),
            on_step=on_step,
            on_line=on_line,
            lake_root=home() / "lake",
        )
    except JobFailed as failure:
        console.print(f"[red]pipeline stopped at {failure.step}: {failure.reason}[/]")
        raise SystemExit(1) from None
    outcome = run.outcome
    if outcome is None or outcome.status != "promoted":
        reason = outcome.reason if outcome else "no outcome"
        console.print(f"[yellow]challenger not promoted, the champion stays: {escape(reason)}[/]")
        console.print(f"Report: {run_dir / 'report.html'}")
        raise SystemExit(EXIT_REJECTED)
    metrics = outcome.test_metrics
    console.print(
        f"[green]✔ model {outcome.model_version}[/] ({outcome.family}) is the champion "
        f"({outcome.registered_as}): test ROC-AUC {metrics['roc_auc']:.3f}, PR-AUC {metrics['pr_auc']:.3f}."
    )
    console.print(f"Report: {run_dir / 'report.html'}")
    return run_dir


@main.command(help="Train if no model is published yet (or --retrain), then serve. This is `make run`.")
@click.option("--retrain", is_flag=True, help="train a new model even if one is published")
@click.option("--rows", type=click.IntRange(min=100), default=DEFAULT_ROWS, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--api-port", type=int, default=8000, envvar="CLAIMS_RISK_API_PORT", show_default=True)
@click.option("--model-port", type=int, default=8080, envvar="CLAIMS_RISK_MODEL_PORT", show_default=True)
def up(retrain: bool, rows: int, host: str, api_port: int, model_port: int) -> None:
    from local.pipeline_runner import LocalModelStore

    store = LocalModelStore(home() / "models")
    if retrain or store.current_dir() is None:
        from step_functions.pipeline import PipelineInputs

        try:
            _train(None, rows, PipelineInputs(tuning_trials=0, cv_folds=0))
        except SystemExit as stopped:
            if stopped.code != EXIT_REJECTED or store.current_dir() is None:
                raise
    else:
        console.print(
            f"[green]✔[/] reusing the published model in {store.current_dir()} (retrain: make run RETRAIN=1)"
        )
    _serve(host, api_port, model_port)


@main.command(help="Serve the published model and the API until Ctrl-C.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--api-port", type=int, default=8000, envvar="CLAIMS_RISK_API_PORT", show_default=True)
@click.option("--model-port", type=int, default=8080, envvar="CLAIMS_RISK_MODEL_PORT", show_default=True)
def serve(host: str, api_port: int, model_port: int) -> None:
    _serve(host, api_port, model_port)


API_ENVIRONMENTS_ENV = "CLAIMS_RISK_API_ENVIRONMENTS"


def api_environments() -> int:
    """How many invocations of the API's handler run side by side (one process each, as Lambda runs
    one execution environment per concurrent invocation): CLAIMS_RISK_API_ENVIRONMENTS, default 4."""
    value = os.environ.get(API_ENVIRONMENTS_ENV, "4")
    if not value.isdigit() or not 1 <= int(value) <= 64:
        raise click.BadParameter(f"{API_ENVIRONMENTS_ENV} must be 1 to 64, not {value!r}")
    return int(value)


def _serve(host: str, api_port: int, model_port: int) -> None:
    from local.auth import local_token
    from local.dropbox import default_folder
    from local.pipeline_runner import LocalModelStore
    from local.servers import port_is_free
    from local.supervisor import (
        CrashLoop,
        NotReady,
        Supervisor,
        listening_socket,
        run_until_stopped,
        supervised_children,
    )

    model_dir = LocalModelStore(home() / "models").current_dir()
    if model_dir is None:
        console.print("[red]no published model: run `claims-risk train` first[/]")
        raise SystemExit(1)
    for port, what, env in (
        (api_port, "API", "CLAIMS_RISK_API_PORT"),
        (model_port, "model server", "CLAIMS_RISK_MODEL_PORT"),
    ):
        if not port_is_free(host, port):
            console.print(f"[red]port {port} for the {what} is in use: free it or set {env}[/]")
            raise SystemExit(1)
    logs = home() / "logs"
    model_url, api_url = f"http://{host}:{model_port}", f"http://{host}:{api_port}"
    api_socket = listening_socket(host, api_port)  # kept here: clients queue on it while the API restarts

    def say(line: str) -> None:
        console.print(line, markup=False, soft_wrap=True)
        console.file.flush()

    children = supervised_children(
        home(), host, model_port, api_socket.fileno(), api_url, logs, api_environments=api_environments()
    )
    supervisor = Supervisor(children, home(), say=say)
    try:
        with console.status("starting the model server, the API, the drop folder's watcher and the alarms"):
            supervisor.start()
    except NotReady as error:
        supervisor.stop()
        console.print(f"[red]could not start: {error}[/]")
        raise SystemExit(1) from None
    _print_where_to_look(api_url, model_url, model_dir, logs, local_token(home()))
    incoming = default_folder(home()) / "incoming"
    console.print(
        f"  {'Drop folder':<14} {incoming}   (scored/, rejected/, summaries/ beside it)",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"  {'Alarms':<14} {home() / 'monitoring' / 'alarms.jsonl'}", markup=False, soft_wrap=True)
    console.print(
        f"  {'Processes':<14} {home() / 'run' / 'children.json'}   (each is restarted if it crashes)",
        markup=False,
        soft_wrap=True,
    )
    console.file.flush()
    try:
        run_until_stopped(supervisor)
    except KeyboardInterrupt:
        console.print("stopping…")
    except CrashLoop as error:
        console.print(f"[red]{escape(str(error))}[/]")
        raise SystemExit(1) from None
    finally:
        api_socket.close()


def _print_where_to_look(api_url: str, model_url: str, model_dir: Path, logs: Path, token: str) -> None:
    from local.auth import THROTTLE_ENV, TOKEN_ENV

    console.print("\n[bold green]Claims risk is running on this machine.[/]")
    rows = [
        ("API", f"{api_url}/api/v1/predict   (POST a claim)"),
        ("Web page", f"{api_url}/ui/#token={token}"),
        ("Swagger UI", f"{api_url}/swagger"),
        ("OpenAPI JSON", f"{api_url}/swagger?format=json"),
        ("Health", f"{api_url}/health"),
        ("Model server", f"{model_url}/ping, {model_url}/invocations (SageMaker serving contract)"),
        ("Model card", f"{api_url}/api/v1/models/current"),
        ("Model", str(model_dir)),
        (
            "Claims lake",
            f'{logs.parent / "lake"}   (claims-risk lake query "SELECT * FROM inferences LIMIT 5")',
        ),
        ("Logs", str(logs)),
        ("API token", f"{token}   (set {TOKEN_ENV} to choose it; {THROTTLE_ENV} sets the rate limit)"),
    ]
    for label, where in rows:
        console.print(f"  {label:<14} {where}", markup=False, soft_wrap=True)
    # Printed plainly and unwrapped, so it can be pasted as it is.
    curl = (
        f"curl -s -X POST {api_url}/api/v1/predict -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{json.dumps(EXAMPLE_CLAIM)}'"
    )
    console.print("\nTry it:", markup=False)
    console.print(f"  {curl}", markup=False, soft_wrap=True, highlight=False)
    console.print("\nCtrl-C stops both servers.", markup=False)
    console.file.flush()  # the banner must show at once even when stdout is a pipe or a file


@main.command("serve-model", help="Run only the model server (SageMaker serving contract).")
@click.option(
    "--model-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="an unpacked model (default: the published one in <home>/models, followed: a newly promoted "
    "model replaces it while the server runs)",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
def serve_model(model_dir: Path | None, host: str, port: int) -> None:
    import uvicorn

    from local.pipeline_runner import LocalModelStore
    from sagemaker_jobs.inference.model_server import create_model_server

    follow = None
    if model_dir is None:
        follow = LocalModelStore(home() / "models").current_dir
        model_dir = follow()
        if model_dir is None:
            raise click.ClickException("no published model: run `claims-risk train` first, or --model-dir")
    app = create_model_server(model_dir, follow=follow)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@main.command("serve-api", help="Run only the local API in front of a model server.")
@click.option("--model-url", required=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option(
    "--fd", type=int, default=None, help="serve on this inherited listening socket (what `up` passes) instead"
)
def serve_api(model_url: str, host: str, port: int, fd: int | None) -> None:
    import socket

    import uvicorn

    from local.api_server import create_api

    config = uvicorn.Config(
        create_api(model_url, home()), host=host, port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    # The supervisor's socket outlives this process: clients queue on it while the API restarts.
    server.run(sockets=[socket.socket(fileno=fd)] if fd is not None else None)


def _register_groups() -> None:
    """Commands of the drop folder, the monitors, the lake and the deployed stack: modules of their own."""
    from local.aws_smoke import aws
    from local.cli_batch import batch
    from local.cli_lake import lake
    from local.cli_monitor import monitor
    from local.cli_quality import quality

    monitor.add_command(quality)
    main.add_command(batch)
    main.add_command(monitor)
    main.add_command(lake)  # claims-risk lake query "select ..."
    main.add_command(aws)  # claims-risk aws smoke --stack ClaimsRisk-<stage>


_register_groups()


@main.command(help="Delete the local data folder (generated data, runs, models, logs).")
@click.confirmation_option(prompt="Delete the local data folder?")
def clean() -> None:
    shutil.rmtree(home(), ignore_errors=True)
    console.print(f"removed {home()}")


if __name__ == "__main__":
    sys.exit(main())
