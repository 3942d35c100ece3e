"""API Lambda readiness: the bundle CDK builds for the function, and the handler's cold import.

The bundle is made by the very local bundling that ``cdk synth`` uses (:mod:`cdk.bundling`), in a
temporary folder. The Powertools layer (Powertools, pydantic) and the runtime's boto3 are not in it,
so they are not counted. The handler is then imported from that folder in fresh interpreters that
see only the bundle, the standard library and the packages the layer and the runtime provide (not
this virtualenv), with the function's environment (tracing on, as deployed): the bundle must be
complete, no ML library may come along, and the import is timed.
"""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path

from benchmarks.harness import Figure, judged

NAME = "lambda"
SIZE_LIMIT_MB = 10.0
IMPORT_LIMIT_MS = 300.0
IMPORT_RUNS = 9
HANDLER_MODULE = "lambdas.api.handler"
HEAVY = ("numpy", "pandas", "sklearn", "scipy", "xgboost", "tensorflow", "keras", "mlflow", "pyarrow")
# What the Lambda runtime and the stack (cdk/api.py) set; LAMBDA_TASK_ROOT turns Powertools' tracer on.
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "claims-risk-api",
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "SAGEMAKER_ENDPOINT_NAME": "claims-risk",
    "CLAIMS_RISK_MODEL_CARD_S3": "s3://claims-risk-data/models/current/model_card.json",
    "CLAIMS_RISK_STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:123456789012:stateMachine:claims-risk",
    "POWERTOOLS_SERVICE_NAME": "claims-risk-api",
    "POWERTOOLS_METRICS_NAMESPACE": "ClaimsRisk",
    "LOG_LEVEL": "INFO",
}
# What the function's sys.path holds besides the bundle: the Powertools layer, then the runtime's boto3.
LAYER: tuple[str, ...] = ("aws_lambda_powertools", "aws_xray_sdk", "wrapt", "jmespath", "pydantic")
LAYER += ("pydantic_core", "annotated_types", "typing_inspection", "typing_extensions.py")
LAYER += ("pydantic_settings", "dotenv")
RUNTIME = ("boto3", "botocore", "s3transfer", "dateutil", "six.py", "urllib3")
# Run in the fresh interpreter: import the handler from the bundle and say what came with it.
PROBE = """
import json, sys
sys.path[:0] = sys.argv[1:3]
import {module} as handler
loaded = {{name.split(".")[0] for name in sys.modules}}
ours = sorted(
    name for name, module in sys.modules.items()
    if name.split(".")[0] in ("lambdas", "shared") and getattr(module, "__file__", None)
    and not module.__file__.startswith(sys.argv[1])
)
heavy = sorted(loaded & set(sys.argv[3:]))
print(json.dumps({{"handler": handler.__file__, "heavy": heavy, "outside": ours}}))
"""


def build_bundle(output_dir: Path) -> Path:
    """The API function's asset, as ``cdk synth`` bundles it (no Docker)."""
    from aws_cdk import DockerImage

    from cdk.bundling import api_bundling

    # Bytecode for this interpreter, which stands in for Lambda's: a synthesis on Python 3.12 ships
    # the same for the runtime.
    local = api_bundling(bytecode_for=f"{sys.version_info.major}.{sys.version_info.minor}").local
    if local is None or not local.try_bundle(str(output_dir), image=DockerImage.from_registry("unused")):
        raise RuntimeError("the API function's local bundling did not run")
    return output_dir


def lambda_site(target: Path) -> Path:
    """A folder with only the packages Lambda would offer (links into this virtualenv): importing the
    handler with it fails if the bundle misses a module, and X-Ray's patching finds no SQLAlchemy."""
    site_packages = Path(sysconfig.get_paths()["purelib"])
    target.mkdir(parents=True)
    for name in (*LAYER, *RUNTIME):
        (target / name).symlink_to(site_packages / name)
    return target


def tree_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6


def zipped_mb(root: Path, target: Path) -> float:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(root))
    return target.stat().st_size / 1e6


def interpreter(code: str, args: list[str], env: dict[str, str], *flags: str) -> tuple[float, str, str]:
    """Seconds for a fresh interpreter to run code: -I ignores PYTHON* variables and the user's site,
    -S the virtualenv's site-packages (the probe puts the bundle and the Lambda-like site on the path)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-I", "-S", *flags, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the probe failed: {done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def import_cost_by_package(importtime: str, count: int = 6) -> list[str]:
    """The packages whose own module bodies took longest, from ``-X importtime`` output (self time)."""
    totals: dict[str, int] = {}
    for line in importtime.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if not line.startswith("import time:") or len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        totals[package] = totals.get(package, 0) + int(parts[0])
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:count]
    return [f"{name} {us / 1000:.0f} ms" for name, us in ranked]


def run() -> list[Figure]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = build_bundle(root / "bundle")
        files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
        size_mb, zip_mb = tree_mb(bundle), zipped_mb(bundle, root / "bundle.zip")
        heavy_files = [f for f in files if any(part.startswith(HEAVY) for part in Path(f).parts)]

        paths = [str(bundle), str(lambda_site(root / "site"))]
        env = {"PATH": "/usr/bin:/bin", "LAMBDA_TASK_ROOT": str(bundle), **LAMBDA_ENV}
        probe = PROBE.format(module=HANDLER_MODULE)
        # A first run writes the libraries' bytecode, as installed packages and the Powertools layer
        # have it (this virtualenv may have none). The bundle ships its own; the runs that are timed
        # write nothing (-B), because Lambda cannot write beside a read-only /var/task.
        shipped = set(bundle.rglob("*.pyc"))
        _, out, _ = interpreter(probe, [*paths, *HEAVY], env)
        for written in set(bundle.rglob("*.pyc")) - shipped:
            written.unlink()
        found = json.loads(out)

        def import_ms(variables: dict[str, str]) -> tuple[float, list[float]]:
            bare, loaded = [], []
            for _ in range(IMPORT_RUNS):
                bare.append(interpreter("import sys", [], variables, "-B")[0])
                loaded.append(interpreter(probe, [*paths, *HEAVY], variables, "-B")[0])
            return (statistics.median(loaded) - statistics.median(bare)) * 1000.0, loaded

        traced_ms, traced_runs = import_ms(env)
        untraced_ms, _ = import_ms({**env, "POWERTOOLS_TRACE_DISABLED": "true"})
        _, _, importtime = interpreter(probe, [*paths, *HEAVY], env, "-B", "-X", "importtime")

    heavy = sorted(set(found["heavy"]) | set(heavy_files))
    complete = not found["outside"] and found["handler"].startswith(str(bundle))
    size_note = f"{len(files)} files; {zip_mb:.3f} MB zipped; Powertools layer and boto3 excluded"
    import_note = (
        f"median of {IMPORT_RUNS} fresh interpreters minus a bare one; tracing on (X-Ray SDK patches "
        f"botocore), library bytecode cached, the bundle shipping its own bytecode. By package: "
        + ", ".join(import_cost_by_package(importtime))
        + f". Python {platform.python_version()} on this machine's CPU; Lambda runs 3.12 on arm64, with "
        "a CPU share set by its memory size"
    )
    return [
        judged(
            NAME,
            "API Lambda bundle",
            "unzipped size",
            size_mb,
            "MB",
            SIZE_LIMIT_MB,
            notes=size_note,
            extra={"files": files},
        ),
        Figure(
            NAME,
            "API Lambda bundle",
            "ML libraries inside or imported (numpy, pandas, sklearn, ...)",
            float(len(heavy)),
            "",
            "0",
            not heavy,
            notes=", ".join(heavy) or "none: no such files, and importing the handler loads none",
        ),
        Figure(
            NAME,
            "API Lambda bundle",
            "modules the handler imports from outside the bundle",
            float(len(found["outside"])),
            "",
            "0",
            complete,
            notes=", ".join(found["outside"]) or "none: the bundle is complete",
        ),
        judged(
            NAME,
            "API Lambda handler",
            "cold import time",
            traced_ms,
            "ms",
            IMPORT_LIMIT_MS,
            notes=import_note,
            extra={"runs_s": traced_runs},
        ),
        Figure(
            NAME,
            "API Lambda handler",
            "cold import time, tracing off",
            untraced_ms,
            "ms",
            notes="POWERTOOLS_TRACE_DISABLED=true: no X-Ray SDK and no botocore patching at import; "
            f"tracing costs {traced_ms - untraced_ms:.0f} ms of the import",
        ),
    ]
