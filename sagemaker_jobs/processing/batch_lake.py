"""Processing job: a completed drop-folder transform job's scored and rejected rows into the claims lake.

The batch trigger starts it in the project image when SageMaker reports a transform job Completed
(:mod:`shared.batch_lake` says why this way); ``python -m sagemaker_jobs.processing.batch_lake``.
It asks SageMaker for the job (input object and version, output folder, content type), reads the
dropped file and its ``.out``, and writes ``batch_scored`` and ``rejected_rows`` through the lake the
environment names (:mod:`shared.transform_results` does the work).

Environment read (command-line options, when given, win):

==============================  ============================================================
``CLAIMS_RISK_TRANSFORM_JOB``   the transform job to mirror (``--transform-job``)
``INCOMING_PREFIX``             the drop folder, so ``source_file`` is the path below it
``CLAIMS_RISK_LAKE_*``          the claims lake (:class:`shared.settings.LakeSettings`)
==============================  ============================================================

Downloads go to ``--work-dir`` (default: a folder on the processing volume, ``/opt/ml/processing``,
when there is one). Exit codes: 0 once the lake holds the file's rows, 2 when they could not be
written (the message says why; the job then ends Failed and on-call is told, and the scored output
stays in S3: re-run it with the trigger's ``lake_rerun``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from shared.batch_jobs import BatchSettings
from shared.batch_lake import TRANSFORM_JOB_ENV
from shared.lake import LakeError
from shared.transform_results import (
    ObjectFiles,
    TransformJobReader,
    TransformResultsError,
    mirror_transform_job,
)

PROCESSING_ROOT = Path("/opt/ml/processing")
EXIT_NOT_WRITTEN = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transform-job", default=os.environ.get(TRANSFORM_JOB_ENV))
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.transform_job:
        parser.error(f"name the transform job: --transform-job or {TRANSFORM_JOB_ENV}")
    return args


def run(
    transform_job: str,
    work_dir: Path | None = None,
    *,
    jobs: TransformJobReader | None = None,
    files: ObjectFiles | None = None,
) -> dict[str, object]:
    """Mirror ``transform_job`` into the lake the environment names; the summary."""
    from shared.adapters.lake import lake_from_env
    from shared.adapters.transform_outputs import S3ObjectFiles, SageMakerTransformJobs

    lake = lake_from_env()
    if lake is None:
        raise LakeError("no claims lake configured: set CLAIMS_RISK_LAKE_ROOT (and _DATABASE in AWS)")
    incoming = BatchSettings.from_env(os.environ).incoming_prefix
    job = (jobs or SageMakerTransformJobs()).describe(transform_job)
    base = work_dir or (PROCESSING_ROOT if PROCESSING_ROOT.is_dir() else None)
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="batch-lake-", dir=base) as scratch:
        summary = mirror_transform_job(
            job, files or S3ObjectFiles(), lake, Path(scratch), incoming_prefix=incoming
        )
    return {**summary.as_dict(), "lake": lake.describe()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = run(args.transform_job, args.work_dir)
    except (TransformResultsError, LakeError, ValueError, OSError) as error:
        print(f"[batch-lake] FAILED: {args.transform_job}: {error}", file=sys.stderr, flush=True)
        return EXIT_NOT_WRITTEN
    print(json.dumps({"batch_lake": summary}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
