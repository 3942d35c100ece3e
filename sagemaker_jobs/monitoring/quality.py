"""Processing job: a labels file dropped under ``outcomes/incoming/`` judged against the serving model.

The quality trigger starts it in the project image for each labels file created in the data bucket
(:mod:`shared.quality_jobs` says why this way); ``python -m sagemaker_jobs.monitoring.quality``. It
reads the version of the file that was dropped, then runs :func:`shared.ml.quality.judge_outcomes`,
the sequence ``claims-risk monitor quality`` runs offline: the outcomes into the lake's ``outcomes``
(the file's partition: a re-run replaces it), the quality report queried in the lake, its figures
into ``monitoring_metrics`` (kind quality, run ``outcomes-<the file's hash>``), and the newest
judged day's figures published to CloudWatch, among them the ``model-quality`` alarm's metric.

Environment read (:class:`shared.settings.QualityJobSettings`):

=====================================  ======================================================
``CLAIMS_RISK_OUTCOMES_BUCKET``        the labels file's bucket
``CLAIMS_RISK_OUTCOMES_KEY`` (``_2``…)  its key, in parts of 256 characters
``CLAIMS_RISK_OUTCOMES_VERSION``       the version dropped (a newer upload is its own run)
``CLAIMS_RISK_MODEL_CARD_S3``          the serving model's manifest.json: the baseline
``CLAIMS_RISK_ENDPOINT``               the metrics' ``Endpoint`` dimension
``CLAIMS_RISK_QUALITY_BUCKET``         day (default) or week
``CLAIMS_RISK_QUALITY_MIN_POSITIVES``  claims a day needs to be judged (default 20)
``publish_cloudwatch_metrics``         ``Enabled``: CloudWatch; else the local metrics file
``CLAIMS_RISK_LAKE_*``                 the claims lake (:class:`shared.settings.LakeSettings`)
=====================================  ======================================================

Exit codes: 0 once judged (a drop in quality is a finding, not a failure: the alarm says it), 2 when
the labels file was refused (not a labels CSV, or claims the lake never saw: nothing of it is kept),
1 when the run could not finish (the lake, S3 or CloudWatch failed). Either failure writes its reason
to ``/opt/ml/output/message``, which SageMaker returns as the job's ``ExitMessage`` ("Save and Access
Metadata Information About Your Processing Job", SageMaker developer guide,
https://docs.aws.amazon.com/sagemaker/latest/dg/byoc-metadata.html), and the on-call message
carries it; the file stays where it was dropped.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Final

from shared.lake import LakeError
from shared.ml.quality import (
    MAX_LABELS_BYTES,
    LabelsFile,
    OutcomesError,
    QualityRun,
    baseline_from_manifest,
    judge_outcomes,
    labels_run_id,
)
from shared.ports import ArtifactStore, ClaimsLake, MetricsPublisher
from shared.settings import QualityJobSettings, SettingsError
from shared.transform_results import ObjectFiles

PROCESSING_ROOT: Final = Path("/opt/ml/processing")
EXIT_MESSAGE: Final = Path("/opt/ml/output/message")
MESSAGE_BYTES: Final = 1024  # SageMaker keeps the first 1 KB
EXIT_FAILED: Final = 1
EXIT_REFUSED: Final = 2


def run(
    settings: QualityJobSettings,
    *,
    lake: ClaimsLake | None = None,
    files: ObjectFiles | None = None,
    artifacts: ArtifactStore | None = None,
    metrics: MetricsPublisher | None = None,
    work_dir: Path | None = None,
    at: float | None = None,
) -> QualityRun:
    """Judge the labels file the settings name; the adapters default to the environment's (S3, the
    lake of CLAIMS_RISK_LAKE_*, CloudWatch when publishing is enabled)."""
    from shared.adapters.artifacts import store_for
    from shared.adapters.lake import lake_from_env
    from shared.adapters.metrics import metrics_from_env
    from shared.adapters.transform_outputs import S3ObjectFiles

    uri = f"s3://{settings.required('bucket')}/{settings.outcomes_key()}"
    card = settings.required("model_card_s3")
    lake = lake or lake_from_env()
    if lake is None:
        raise LakeError("no claims lake configured: set CLAIMS_RISK_LAKE_ROOT (and _DATABASE in AWS)")
    baseline = baseline_from_manifest((artifacts or store_for(card)).read_json(card))
    base = work_dir or (PROCESSING_ROOT if PROCESSING_ROOT.is_dir() else None)
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="labels-", dir=base) as scratch:
        local = Path(scratch) / "labels"
        (files or S3ObjectFiles()).download(uri, settings.version, local)  # the version dropped
        if local.stat().st_size > MAX_LABELS_BYTES:
            raise OutcomesError(
                f"{uri}: {local.stat().st_size:,} bytes, more than the {MAX_LABELS_BYTES:,} a labels "
                "file may hold: split it (each file counts, in its own partition)"
            )
        content = local.read_bytes()
    return judge_outcomes(
        lake,
        baseline,
        metrics or metrics_from_env(),
        endpoint=settings.endpoint,
        run_id=labels_run_id(content),
        labels=LabelsFile(content, settings.outcomes_key()),
        bucket=settings.bucket_by,
        min_positives=settings.min_positives,
        at=at,
    )


def exit_message(text: str, path: Path = EXIT_MESSAGE) -> None:
    """The reason, where SageMaker reads the job's exit message (when the folder exists: in a job)."""
    if path.parent.is_dir():
        body = text.encode("utf-8")[:MESSAGE_BYTES].decode("utf-8", errors="ignore")
        path.write_text(body, encoding="utf-8")


def main(argv: list[str] | None = None, *, message: Path = EXIT_MESSAGE) -> int:
    del argv  # everything comes from the environment, as the trigger sets it
    try:
        settings = QualityJobSettings.load()
        where = f"s3://{settings.required('bucket')}/{settings.outcomes_key()}"
    except SettingsError as error:
        return _failed(f"[quality] FAILED: {error}", message, EXIT_FAILED)
    try:
        summary = run(settings).summary()
    except OutcomesError as error:
        text = f"[quality] REFUSED {error}. Nothing of the file was kept; fix it and upload it again."
        return _failed(text, message, EXIT_REFUSED)
    except Exception as error:  # whatever failed, on-call reads why in the exit message
        text = f"[quality] FAILED {where}: {error}. Upload the file again once the cause is fixed."
        return _failed(text, message, EXIT_FAILED)
    print(json.dumps({"quality": {"labels": where, **summary}}, default=str), flush=True)
    return 0


def _failed(text: str, message: Path, code: int) -> int:
    print(text, file=sys.stderr, flush=True)
    exit_message(text, message)
    return code


if __name__ == "__main__":
    sys.exit(main())
