"""The project image's runtime under SageMaker's exact layouts (issue 11: one runtime, the lock's, for
every job and the endpoint).

By default the image's own install script (``sagemaker_jobs/image/install.sh``, what the Dockerfile
runs) installs into a fresh folder, offline, from uv's cache (the lock's files that ``make install``
fetched); every entrypoint then runs with a bare environment (no ``PYTHONPATH``, no virtual
environment of this test's), as a container would run it. With ``CLAIMS_RISK_TEST_IMAGE`` naming a
built image (CI's workflow builds one with Docker), the very same tests run the image itself with
``docker run``, ``/opt/ml`` mounted as SageMaker mounts it. This machine has no container engine and
cannot reach the base image's registry, so here the installed folder stands in for the image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import pytest

from local.servers import free_port, stop, wait_until_ready
from shared.metric_lines import parse_metrics
from step_functions.pipeline import (
    OBJECTIVE_METRIC,
    TRAINING_METRICS,
    PipelineInputs,
    static_hyperparameters,
    trial_hyperparameters,
)
from tests.factories import minimal_claim

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
INSTALL: Final = REPO_ROOT / "sagemaker_jobs" / "image" / "install.sh"
UV: Final = Path(sys.executable).parent / "uv"
IMAGE_PREFIX: Final = "/opt/claims-risk"  # where the Dockerfile installs
OPT_ML: Final = "/opt/ml"

pytestmark = pytest.mark.slow


def bare_env(**extra: str) -> dict[str, str]:
    """What a container gives a program: a PATH, a home, and nothing of this test's Python."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        **extra,
    }


@dataclass(frozen=True)
class Runtime:
    """The installed runtime (a folder here) or the built image (``docker run``), run the same way."""

    prefix: str  # where the runtime lives, as its programs see it
    image: str | None = None

    @property
    def code_version(self) -> str:
        return "test-commit" if self.image is None else os.environ.get("CLAIMS_RISK_TEST_CODE_VERSION", "")

    def opt_ml(self, host: Path) -> str:
        """The /opt/ml a program sees for the host folder ``host``."""
        return str(host) if self.image is None else OPT_ML

    def command(
        self, program: list[str], opt_ml: Path | None = None, **env: str
    ) -> tuple[list[str], dict[str, str]]:
        if self.image is None:
            extra = {"SM_OPT_ML": str(opt_ml)} if opt_ml is not None else {}
            return [f"{self.prefix}/bin/{program[0]}", *program[1:]], bare_env(**extra, **env)
        docker = ["docker", "run", "--rm", "--network", "none"]
        if opt_ml is not None:
            docker += ["-v", f"{opt_ml}:{OPT_ML}"]
        for name, value in env.items():
            docker += ["-e", f"{name}={value}"]
        return [*docker, self.image, *program], dict(os.environ)

    def output(self, program: list[str]) -> str:
        """What a program of the runtime (an absolute path in it, or a system tool) prints."""
        if self.image is None:
            command, environment = program, bare_env()
        else:
            command, environment = ["docker", "run", "--rm", self.image, *program], dict(os.environ)
        return subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout

    def run(
        self, program: list[str], opt_ml: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        command, environment = self.command(program, opt_ml, **env)
        result = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    image = os.environ.get("CLAIMS_RISK_TEST_IMAGE")
    if image:
        return Runtime(IMAGE_PREFIX, image)
    prefix = tmp_path_factory.mktemp("image") / "opt" / "claims-risk"
    env = bare_env(UV=str(UV), PYTHON=sys.executable, UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never")
    result = subprocess.run(
        ["sh", str(INSTALL), str(prefix), str(REPO_ROOT), "test-commit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return Runtime(str(prefix))


LIST_DISTRIBUTIONS: Final = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"
)
MARKER_ENVIRONMENT: Final = (
    "import json, os, platform, sys; print(json.dumps({"
    "'python_version': '.'.join(platform.python_version_tuple()[:2]), "
    "'python_full_version': platform.python_version(), 'sys_platform': sys.platform, "
    "'platform_machine': platform.machine(), 'platform_system': platform.system(), 'os_name': os.name, "
    "'implementation_name': sys.implementation.name, "
    "'platform_python_implementation': platform.python_implementation()}))"
)


def test_the_runtime_holds_exactly_the_locks_versions(runtime: Runtime) -> None:
    """Every distribution in the runtime is the lock's version for its interpreter, and nothing of the
    test or CDK tooling is there."""
    python = f"{runtime.prefix}/venv/bin/python"
    installed: dict[str, str] = json.loads(runtime.output([python, "-c", LIST_DISTRIBUTIONS]))
    installed.pop("pip", None)  # the virtual environment's own installer, not a dependency
    requirements = runtime.output(["cat", f"{runtime.prefix}/requirements.txt"])
    locked = _locked_versions(requirements, json.loads(runtime.output([python, "-c", MARKER_ENVIRONMENT])))
    assert installed == locked
    assert {"xgboost-cpu", "tensorflow-cpu", "scikit-learn", "pydantic", "uvicorn"} <= set(installed)
    assert "--hash=sha256:" in requirements
    assert not {"pytest", "aws-cdk-lib", "moto"} & set(installed)  # no test or CDK tooling in the image


def _locked_versions(requirements: str, marker_env: dict[str, str]) -> dict[str, str]:
    """The export holds one line per version the lock resolves (by Python version, by platform): the
    one whose marker holds for the runtime's interpreter is what must be installed."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    environment: dict[str, str] = {**cast(dict[str, str], default_environment()), **marker_env}
    text = requirements.replace("\\\n", " ")
    locked = {}
    for line in text.splitlines():
        if "==" not in line or line.startswith("#"):
            continue
        requirement = Requirement(line.split(" --hash")[0].strip())
        if requirement.marker is None or requirement.marker.evaluate(environment):
            locked[requirement.name.lower().replace("_", "-")] = str(requirement.specifier).removeprefix("==")
    return locked


def sagemaker_training_tree(root: Path, run: PipelineRun, hyperparameters: dict[str, str]) -> Path:
    """/opt/ml as SageMaker lays it out for a custom image: channels under input/data, hyperparameters
    (all strings) in input/config/hyperparameters.json, and no SM_* variables."""
    opt_ml = root / "opt" / "ml"
    for channel in ("train", "validation"):
        shutil.copytree(run.artifacts[channel], opt_ml / "input" / "data" / channel)
    (opt_ml / "input" / "config").mkdir(parents=True)
    (opt_ml / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (opt_ml / "model").mkdir()
    return opt_ml


def test_a_tuning_trial_scores_the_hyperparameters_sagemaker_gives_it(
    runtime: Runtime, trained_run: PipelineRun, tmp_path: Path
) -> None:
    """What a trial of the tuning job receives: the run's fixed values, the tuned ones and SageMaker's
    own ``_tuning_objective_metric``; it prints the objective the tuner's regex reads."""
    trial = {
        **trial_hyperparameters(PipelineInputs(tuning_max_rows=3000, tuning_folds=3)),
        "model_family": "xgboost",
        "xgb_max_depth": "3",
        "xgb_num_round": "60",
        "_tuning_objective_metric": OBJECTIVE_METRIC,
    }
    opt_ml = sagemaker_training_tree(tmp_path, trained_run, trial)
    result = runtime.run(["train"], opt_ml, TRAINING_JOB_NAME="claims-risk-abc-tune-001")
    metrics = parse_metrics(result.stdout, list(TRAINING_METRICS))
    scored = json.loads((opt_ml / "model" / "trial.json").read_text())
    assert len(scored["fold_pr_auc"]) == 3  # the run's tuning_folds, as the local tuner scores
    assert metrics[OBJECTIVE_METRIC] == pytest.approx(scored["cv_pr_auc"], abs=1e-6)
    assert 0.0 < metrics[OBJECTIVE_METRIC] <= 1.0
    assert "_tuning_objective_metric" in result.stdout  # logged as SageMaker's, not rejected
    assert "training on a stratified sample of 3000 rows" in result.stdout


def test_the_final_training_writes_the_model_artifact(
    runtime: Runtime, trained_run: PipelineRun, tmp_path: Path
) -> None:
    final = {
        **static_hyperparameters(PipelineInputs(seed=5)),
        "model_family": "xgboost",
        "xgb_num_round": "60",
    }
    opt_ml = sagemaker_training_tree(tmp_path, trained_run, final)
    result = runtime.run(["train"], opt_ml)
    manifest = json.loads((opt_ml / "model" / "manifest.json").read_text())
    if runtime.code_version:
        assert manifest["lineage"]["code_version"] == runtime.code_version  # baked in at install
    assert manifest["lineage"]["hyperparameters"]["seed"] == 5
    assert OBJECTIVE_METRIC in parse_metrics(result.stdout, list(TRAINING_METRICS))


def test_a_processing_job_runs_its_module_with_the_code_in_the_image(
    runtime: Runtime, tmp_path: Path
) -> None:
    """ContainerEntrypoint ["job", module] with the arguments the state machine passes; no code input."""
    from shared.ml.synthetic import generate_claims, write_claims

    opt_ml = tmp_path / "opt" / "ml"
    base = opt_ml / "processing"
    write_claims(generate_claims(600, seed=3), base / "input" / "raw" / "claims.csv")
    for name in ("train", "validation", "test", "rejected", "quality", "monitor_baseline"):
        (base / "output" / name).mkdir(parents=True)
    seen_base = f"{runtime.opt_ml(opt_ml)}/processing"
    runtime.run(
        [
            "job",
            "sagemaker_jobs.processing.validate",
            "--base-dir",
            seen_base,
            "--spec",
            "claims",
            "--seed",
            "4",
        ],
        opt_ml,
    )
    quality = json.loads((base / "output" / "quality" / "data_quality.json").read_text())
    assert quality["rows_in"] == 600


@pytest.fixture(scope="module")
def served_model(trained_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model as SageMaker lays it out: model.tar.gz unpacked into /opt/ml/model."""
    opt_ml = tmp_path_factory.mktemp("serving") / "opt" / "ml"
    with tarfile.open(trained_run.model_tarball) as archive:
        archive.extractall(opt_ml / "model", filter="data")
    return opt_ml


def serve(runtime: Runtime, opt_ml: Path, **env: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if runtime.image is None:
        command, environment = runtime.command(
            ["serve"], opt_ml, CLAIMS_RISK_SERVE_HOST="127.0.0.1", SAGEMAKER_BIND_TO_PORT=str(port), **env
        )
    else:  # the container listens on 8080 as SageMaker expects; published on this machine's loopback
        command, environment = runtime.command(["serve"], opt_ml, **env)
        command[3:3] = ["-p", f"127.0.0.1:{port}:8080"]
        command[command.index("--network") : command.index("--network") + 2] = []
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{url}/ping", process, timeout_s=120)
    return process, url


def post(url: str, body: bytes, content_type: str, accept: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": content_type, "Accept": accept}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


def test_the_endpoint_serves_the_model_on_8080s_contract(runtime: Runtime, served_model: Path) -> None:
    process, url = serve(runtime, served_model)
    try:
        status, body = post(url, json.dumps({"instances": [minimal_claim()]}).encode(), "application/json")
        assert status == 200
        [prediction] = json.loads(body)["predictions"]
        assert prediction["risk_level"] in {"low", "high"} and prediction["risk_factors"]
    finally:
        stop(process)


def test_batch_transform_mini_batches_without_headers_give_one_line_per_row(
    runtime: Runtime, served_model: Path
) -> None:
    """SplitType Line: a mini-batch of CSV lines with no header, in the spec's column order; a bad row
    gets its own error line and goes to the rejected prefix, the others are scored."""
    from shared.ml.model import RiskModel

    model = RiskModel.load(served_model / "model")
    columns = [c.name for c in model.spec.columns if c.role.value != "ignore"]
    claims = [
        minimal_claim(claim_id="CLM-1"),
        minimal_claim(claim_id="CLM-2"),
        minimal_claim(claim_id="CLM-BAD", claim_amount="not a number"),
    ]
    lines = [",".join(str(claim.get(c, "")) for c in columns) for claim in claims]
    rejected = served_model / "rejected"
    seen_rejected = f"{runtime.opt_ml(served_model)}/rejected"
    process, url = serve(runtime, served_model, CLAIMS_RISK_REJECTED_S3_URI=seen_rejected)
    try:
        status, body = post(
            url, ("\n".join(lines) + "\n").encode(), "text/csv", accept="application/jsonlines"
        )
    finally:
        stop(process)
    assert status == 200
    results = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    assert len(results) == 3
    assert "risk_level" in results[0] and "risk_level" in results[1]
    assert "error" in results[2]
    [part] = list(rejected.glob("*.jsonl"))
    assert json.loads(part.read_text().splitlines()[0])["claim_id"] == "CLM-BAD"


def test_nothing_is_installed_when_a_job_starts(runtime: Runtime) -> None:
    """The entrypoints only exec the installed interpreter: no pip, no download, no code fetch."""
    for name in ("train", "serve", "job"):
        script = runtime.output(["cat", f"{runtime.prefix}/bin/{name}"])
        assert "pip" not in script and "curl" not in script and "s3" not in script.lower()
        assert script.rstrip().splitlines()[-1].startswith(f'exec "{runtime.prefix}/venv/bin/python" -m')


def test_the_image_itself_is_tested_where_a_container_engine_can_build_it(runtime: Runtime) -> None:
    if runtime.image is not None:
        return  # every test above ran the built image
    engine = shutil.which("docker") or shutil.which("podman")
    reason = "no container engine on this machine"
    if engine is not None:
        info = subprocess.run([engine, "info"], capture_output=True, text=True, check=False, timeout=30)
        reason = (
            f"{Path(engine).name} is only a client here (no engine answers)"
            if info.returncode != 0
            else "the base image's registry is out of reach (tests never use the network)"
        )
    pytest.skip(
        f"{reason}: the tests above ran the image's install script and entrypoints; CI's workflow builds "
        "the image and runs them against it (CLAIMS_RISK_TEST_IMAGE)"
    )
