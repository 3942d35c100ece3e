"""The drift monitoring job, under Model Monitor's bring-your-own-container contract.

Model Monitor runs ``python -m sagemaker_jobs.monitoring.drift`` every hour with the window's data
capture copied to ``dataset_source`` and collects whatever the job leaves in ``output_path``:

- ``constraint_violations.json`` in Model Monitor's structure (an empty list when nothing drifted;
  with violations the execution ends *CompletedWithViolations*, so the exit code stays 0),
- ``drift_report.json`` with every number, and ``report.html`` with the plots.

Personal fields (protected attributes and free text) are not monitored: the capture drops or
pseudonymizes them (:func:`shared.capture.personal_fields`), so their absence is no drift.
The baseline comes from the model artifact (``baseline_statistics.json`` and ``feature_spec.json``),
not from Model Monitor's ``baseline_statistics``/``baseline_constraints`` files, which describe the
built-in analyzer's own format. The three alarmed metrics go to CloudWatch when
``publish_cloudwatch_metrics=Enabled`` and to ``<home>/monitoring/metrics.jsonl`` otherwise.

Environment read (command-line options, when given, win):

==============================  ============================================================
``dataset_source``              the capture folder (``--capture``); files under
                                ``<endpoint>/<variant>/yyyy/mm/dd/hh/``
``output_path``                 where the outputs go (``--out``)
``start_time``, ``end_time``    the window, ISO 8601 (``--since``, ``--until``); both optional
``CLAIMS_RISK_MODEL_URI``       the model: an ``s3://…/model.tar.gz``, a local tarball or folder
                                (``--model-dir`` takes a folder)
``CLAIMS_RISK_ENDPOINT``        the metrics' ``Endpoint`` dimension (``--endpoint``), else
``sagemaker_endpoint_name``     Model Monitor's name for it, else the capture's one endpoint
                                folder, else ``local``
``publish_cloudwatch_metrics``  ``Enabled``: CloudWatch; else the local sink in
``CLAIMS_RISK_HOME``            ``<home>/monitoring/metrics.jsonl``
``CLAIMS_RISK_LAKE_*``          the claims lake (:class:`shared.settings.LakeSettings`): the
                                capture's hours in the window are flattened into it, the run's
                                figures are written to it, and ``--source lake`` (env
                                ``CLAIMS_RISK_DRIFT_SOURCE``) reads the window from it
``CLAIMS_RISK_DRIFT_PHASE``     ``map`` or ``reduce`` when the job is sharded (``--phase``);
                                absent: the whole job on one instance
``CLAIMS_RISK_DRIFT_PARTIALS``  the reduce's input: the map's partials (``--partials``)
==============================  ============================================================

**Sharded** (shared/drift_jobs.py says how SageMaker runs it): in the *map* phase each instance
reads its shard of the capture (``ShardedByS3Key``) and writes ``<output_path>/<host>/partial.json``
(its counts against the baseline's bins, :mod:`sagemaker_jobs.monitoring.partials`) and, with a
lake, its shard's ``inferences`` rows beside it; it writes no report and publishes nothing. The
*reduce* phase merges every host's partial into the window's counts, then does what the whole job
does: the same report and violations, the lake, the metrics, once. Merged counts are the one-pass
counts, so the figures are the one-instance job's.

Exit codes: 0 when the job ran (drift or not), 2 when an input could not be read (the message says
which and why).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from sagemaker_jobs.environment import processing_job_name
from sagemaker_jobs.monitoring.partials import (
    RESOURCE_CONFIG,
    RESOURCE_CONFIG_VARIABLE,
    SHARD_LAKE,
    Partial,
    PartialsError,
    accumulator_state,
    cluster_from,
    merge,
    parquet_frames,
    read_partials,
    shard_inference_files,
    write_partial,
)
from shared.adapters.lake import LocalLake, lake_from_env
from shared.alarms import FEATURE_DRIFT_METRIC, MISSING_RATE_METRIC, MONITORING_NAMESPACE
from shared.capture import iter_capture_files, personal_fields
from shared.drift_jobs import PARTIALS_INPUT, PARTIALS_VARIABLE, PHASE_VARIABLE
from shared.feature_spec import ColumnRole, FeatureSpec
from shared.lake import INFERENCES, LakeError, inferences_in_window
from shared.lake_writers import MetricRow, capture_hours, ingest_capture, write_monitoring
from shared.ml.drift import (
    FEATURE_DRIFT_ALARM,
    MISSING_RATE_ALARM,
    PREDICTION_DRIFT_ALARM,
    DriftAccumulator,
    DriftReport,
    FeatureDrift,
)
from shared.ml.model import BASELINE_FILE, MANIFEST, SPEC_FILE, unpack_model
from shared.payloads import CSV, CSV_OUTPUT_COLUMNS, JSON_LINES, PayloadError, media_type, parse_records
from shared.ports import ClaimsLake, MetricDatum, MetricsPublisher

VIOLATIONS_FILE: Final = "constraint_violations.json"
REPORT_JSON: Final = "drift_report.json"
REPORT_HTML: Final = "report.html"
CHUNK_CLAIMS: Final = 50_000  # claims held before they are binned: bounds memory, keeps numpy busy
EXIT_UNREADABLE: Final = 2
# Below this (about 350k single-claim exchanges), starting worker processes costs more than it saves.
PARALLEL_BYTES: Final = 512 * 2**20
MAX_WORKERS: Final = 8
DEFAULT_CAPTURE: Final = "/opt/ml/processing/input/endpoint"
DEFAULT_OUTPUT: Final = "/opt/ml/processing/output"
_SCORE_COLUMN: Final = CSV_OUTPUT_COLUMNS.index("risk_score")


class DriftJobError(RuntimeError):
    """An input the job cannot read; the message says which and why."""


def log(message: str) -> None:
    print(f"[drift] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Configuration: Model Monitor's environment, overridden by options.


@dataclass(frozen=True)
class DriftJobConfig:
    capture: Path
    output: Path
    model: str  # a model folder, a local model.tar.gz or an s3:// URI of one (not read by the reduce)
    endpoint: str
    start: datetime | None = None
    end: datetime | None = None
    source: Literal["capture", "lake"] = "capture"
    lake: ClaimsLake | None = None
    run_id: str = ""
    phase: Literal["whole", "map", "reduce"] = "whole"
    partials: Path = Path(PARTIALS_INPUT)  # the reduce's input
    resource_config: Path = Path(RESOURCE_CONFIG)  # the map's host and cluster


def parse_time(text: str) -> datetime:
    """ISO 8601 (``Z`` allowed); a time without zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DriftJobError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _capture_endpoint(capture: Path) -> str | None:
    """The endpoint folder's name when the capture holds exactly one endpoint."""
    if not capture.is_dir():
        return None
    names = [p.name for p in capture.iterdir() if p.is_dir()]
    return names[0] if len(names) == 1 else None


def config_from(argv: Sequence[str] | None, env: Mapping[str, str]) -> DriftJobConfig:
    parser = argparse.ArgumentParser(prog="python -m sagemaker_jobs.monitoring.drift", description=__doc__)
    parser.add_argument("--capture", type=Path, help="capture folder (env dataset_source)")
    parser.add_argument("--out", type=Path, help="output folder (env output_path)")
    parser.add_argument("--model-dir", type=Path, help="model folder (env CLAIMS_RISK_MODEL_URI)")
    parser.add_argument("--since", help="window start, ISO 8601 (env start_time)")
    parser.add_argument("--until", help="window end, ISO 8601, exclusive (env end_time)")
    parser.add_argument("--endpoint", help="the metrics' Endpoint dimension (env CLAIMS_RISK_ENDPOINT)")
    parser.add_argument(
        "--source",
        choices=("capture", "lake"),
        help="read the window from the capture files or the claims lake (env CLAIMS_RISK_DRIFT_SOURCE)",
    )
    parser.add_argument("--run-id", help="the run's partition in the lake (default: the job's name)")
    parser.add_argument(
        "--phase",
        choices=("whole", "map", "reduce"),
        help=f"sharded: map (this instance's shard) or reduce (merge the partials) (env {PHASE_VARIABLE})",
    )
    parser.add_argument(
        "--partials", type=Path, help=f"the reduce's partials folder (env {PARTIALS_VARIABLE})"
    )
    args = parser.parse_args(argv)
    source = args.source or env.get("CLAIMS_RISK_DRIFT_SOURCE") or "capture"
    if source not in ("capture", "lake"):
        raise DriftJobError(f"CLAIMS_RISK_DRIFT_SOURCE is capture or lake, not {source!r}")
    phase = args.phase or env.get(PHASE_VARIABLE) or "whole"
    if phase not in ("whole", "map", "reduce"):
        raise DriftJobError(f"{PHASE_VARIABLE} is map or reduce, not {phase!r}")
    if phase == "map" and source == "lake":  # the map's shard is its share of the capture objects
        raise DriftJobError("the map phase reads its shard of the capture: --source lake cannot be sharded")
    try:
        lake = lake_from_env()
    except LakeError as error:
        raise DriftJobError(str(error)) from error
    if source == "lake" and lake is None:
        raise DriftJobError("--source lake needs the claims lake (CLAIMS_RISK_LAKE_*)")
    capture = args.capture or Path(env.get("dataset_source") or DEFAULT_CAPTURE)
    model = str(args.model_dir) if args.model_dir else env.get("CLAIMS_RISK_MODEL_URI", "")
    if not model and phase != "reduce":  # the reduce bins nothing: the partials carry their baseline
        raise DriftJobError("no model: give --model-dir or set CLAIMS_RISK_MODEL_URI (s3://…/model.tar.gz)")
    since = args.since or env.get("start_time") or ""
    until = args.until or env.get("end_time") or ""
    endpoint = (
        args.endpoint
        or env.get("CLAIMS_RISK_ENDPOINT")
        or env.get("sagemaker_endpoint_name")
        or _capture_endpoint(capture)
        or "local"
    )
    return DriftJobConfig(
        capture=capture,
        output=args.out or Path(env.get("output_path") or DEFAULT_OUTPUT),
        model=model,
        endpoint=endpoint,
        start=parse_time(since) if since else None,
        end=parse_time(until) if until else None,
        source="lake" if source == "lake" else "capture",
        lake=lake,
        run_id=args.run_id or processing_job_name() or datetime.now(UTC).strftime("drift-%Y%m%dT%H%M%S%fZ"),
        phase="map" if phase == "map" else "reduce" if phase == "reduce" else "whole",
        partials=args.partials or Path(env.get(PARTIALS_VARIABLE) or PARTIALS_INPUT),
        resource_config=Path(env.get(RESOURCE_CONFIG_VARIABLE) or RESOURCE_CONFIG),
    )


# ---------------------------------------------------------------------------------------------
# The baseline, from the model artifact.


@dataclass(frozen=True)
class Baseline:
    spec: FeatureSpec
    statistics: dict[str, Any]
    model_version: str

    @property
    def csv_columns(self) -> list[str]:
        """The column order of CSV requests without a header, as the inference script reads them."""
        return [c.name for c in self.spec.columns if c.role != ColumnRole.IGNORE]


def model_folder(model: str, scratch: Path) -> Path:
    """A folder holding the artifact's files: given, unpacked from a tarball, or fetched from S3."""
    if model.startswith("s3://"):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = model[len("s3://") :].partition("/")
        tarball = scratch / "model.tar.gz"
        try:
            boto3.client("s3").download_file(bucket, key, str(tarball))
        except (BotoCoreError, ClientError) as error:
            raise DriftJobError(f"cannot download the model {model}: {error}") from error
        return unpack_model(tarball, scratch / "model")
    path = Path(model)
    if path.is_file():
        try:
            return unpack_model(path, scratch / "model")
        except (OSError, ValueError) as error:  # tarfile's errors are ValueErrors or OSErrors
            raise DriftJobError(f"cannot unpack the model {path}: {error}") from error
    if path.is_dir():
        return path
    raise DriftJobError(f"no model at {model}")


def load_baseline(model_dir: Path) -> Baseline:
    try:
        statistics = json.loads((model_dir / BASELINE_FILE).read_text(encoding="utf-8"))
        spec = FeatureSpec.model_validate_json((model_dir / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DriftJobError(f"the model in {model_dir} has no readable baseline: {error}") from error
    if not isinstance(statistics, dict) or "features" not in statistics:
        raise DriftJobError(f"{model_dir / BASELINE_FILE} is not a baseline (no 'features')")
    version = ""
    manifest = model_dir / MANIFEST
    if manifest.is_file():
        version = str(json.loads(manifest.read_text(encoding="utf-8")).get("model_version", ""))
    return Baseline(spec, statistics, version)


# ---------------------------------------------------------------------------------------------
# Reading the capture: streaming, in the window, in chunks.


def _capture_time(moment: datetime) -> str:
    """A time as SageMaker writes ``inferenceTime``, so that times compare as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _hour_of(path: Path) -> datetime | None:
    """The hour a capture file's folders (…/yyyy/mm/dd/hh/file) name, if they name one."""
    parts = path.parent.parts[-4:]
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    year, month, day, hour = (int(p) for p in parts)
    try:
        return datetime(year, month, day, hour, tzinfo=UTC)
    except ValueError:
        return None


def files_in_window(capture: Path, start: datetime | None, end: datetime | None) -> list[Path]:
    """Capture files whose hour overlaps the window (lines are filtered by their own time too)."""
    files = []
    for path in iter_capture_files(capture):
        hour = _hour_of(path)
        if hour is not None:
            if start is not None and hour.timestamp() + 3600 <= start.timestamp():
                continue
            if end is not None and hour >= end:
                continue
        files.append(path)
    return files


def _body(part: Mapping[str, Any]) -> str | bytes:
    data = part.get("data", "")
    if part.get("encoding") == "BASE64":
        return base64.b64decode(str(data))
    return str(data)


def decode_scores(body: str | bytes, content_type: str) -> list[Any]:
    """The risk scores of a response body (JSON, JSON Lines or the endpoint's CSV)."""
    kind = media_type(content_type)
    if kind == CSV:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        return [row.split(",")[_SCORE_COLUMN] for row in text.splitlines() if row.strip()]
    if kind == JSON_LINES:
        rows = [orjson.loads(line) for line in (body.splitlines() if body else []) if line.strip()]
    else:
        payload = orjson.loads(body)
        rows = payload.get("predictions", []) if isinstance(payload, dict) else payload
    return [row.get("risk_score") for row in rows if isinstance(row, dict)]


@dataclass
class CaptureCounts:
    files: int = 0
    lines: int = 0
    in_window: int = 0
    unreadable_lines: int = 0
    unreadable_requests: int = 0
    unreadable_responses: int = 0
    first_error: str = ""
    seconds: float = 0.0

    def error(self, message: str) -> None:
        self.first_error = self.first_error or message

    def merge(self, other: CaptureCounts) -> None:
        self.files += other.files
        self.lines += other.lines
        self.in_window += other.in_window
        self.unreadable_lines += other.unreadable_lines
        self.unreadable_requests += other.unreadable_requests
        self.unreadable_responses += other.unreadable_responses
        self.error(other.first_error)


def _lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as lines:
            yield from lines
    except OSError as error:
        raise DriftJobError(f"cannot read the capture file {path}: {error}") from error


def _read_files(
    files: Sequence[Path], accumulator: DriftAccumulator, csv_columns: Sequence[str], since: str, until: str
) -> CaptureCounts:
    """Feed the claims and scores of the files' lines in the window (``since`` <= time < ``until``,
    as capture time text; empty for no bound) to the accumulator."""
    counts = CaptureCounts(files=len(files))
    records: list[dict[str, Any]] = []
    scores: list[Any] = []
    for path in files:
        for number, line in enumerate(_lines(path), start=1):
            if not line.strip():
                continue
            counts.lines += 1
            try:
                row = orjson.loads(line)
                request, response = (
                    row["captureData"]["endpointInput"],
                    row["captureData"].get("endpointOutput"),
                )
                when = str(row.get("eventMetadata", {}).get("inferenceTime", ""))
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
                counts.unreadable_lines += 1
                counts.error(f"{path}: line {number} is not a data capture line ({error})")
                continue
            if (since and not since <= when) or (until and not when < until):
                continue
            counts.in_window += 1
            try:
                claims = parse_records(_body(request), request.get("observedContentType"), csv_columns)
            except (PayloadError, ValueError) as error:
                counts.unreadable_requests += 1
                counts.error(f"{path}: line {number}: the request cannot be read ({error})")
                continue
            records.extend(claims)
            if response:
                try:
                    scores.extend(decode_scores(_body(response), str(response.get("observedContentType"))))
                except (PayloadError, ValueError, IndexError, AttributeError) as error:
                    counts.unreadable_responses += 1
                    counts.error(f"{path}: line {number}: the response cannot be read ({error})")
            if len(records) >= CHUNK_CLAIMS:
                accumulator.add_records(records)
                accumulator.add_scores(scores)
                records, scores = [], []
    accumulator.add_records(records)
    accumulator.add_scores(scores)
    return counts


def _read_share(
    files: Sequence[Path], baseline: Baseline, since: str, until: str
) -> tuple[DriftAccumulator, CaptureCounts]:
    """One worker's share of the files: its own accumulator, merged by the parent."""
    accumulator = DriftAccumulator(
        baseline.spec, baseline.statistics, baseline.model_version, personal_fields(baseline.spec)
    )
    return accumulator, _read_files(files, accumulator, baseline.csv_columns, since, until)


def _shares(files: Sequence[Path], parts: int) -> list[list[Path]]:
    """Files dealt into ``parts`` groups of about equal bytes, largest first."""
    groups: list[list[Path]] = [[] for _ in range(parts)]
    loads = [0] * parts
    for path in sorted(files, key=lambda p: -p.stat().st_size):
        lightest = loads.index(min(loads))
        groups[lightest].append(path)
        loads[lightest] += path.stat().st_size
    return [sorted(g) for g in groups if g]


def read_capture(
    files: Sequence[Path],
    baseline: Baseline,
    start: datetime | None = None,
    end: datetime | None = None,
    workers: int | None = None,
    check: bool = True,
) -> tuple[DriftAccumulator, CaptureCounts]:
    """Every captured claim and score in the window, binned against the baseline. Above
    :data:`PARALLEL_BYTES` of capture the files are shared among processes, one per CPU.
    ``check=False`` (a map's shard) leaves the readability check to the reduce, over every shard."""
    started = time.perf_counter()
    since = _capture_time(start) if start is not None else ""
    until = _capture_time(end) if end is not None else ""
    size = sum(p.stat().st_size for p in files)
    if workers is None:
        workers = min(os.cpu_count() or 1, MAX_WORKERS) if size >= PARALLEL_BYTES else 1
    groups = _shares(files, max(1, min(workers, len(files))))
    if len(groups) <= 1:
        accumulator, counts = _read_share(files, baseline, since, until)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Not fork: numpy's BLAS threads are running, and a forked copy of a threaded process may hang.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(len(groups), mp_context=context) as pool:
            futures = [pool.submit(_read_share, group, baseline, since, until) for group in groups]
            results = [future.result() for future in futures]
        accumulator, counts = results[0]
        for other, other_counts in results[1:]:
            accumulator.merge(other)
            counts.merge(other_counts)
    counts.seconds = time.perf_counter() - started
    if check:
        check_readable(counts)
    return accumulator, counts


def check_readable(counts: CaptureCounts) -> None:
    """A window of which nothing could be read is an input error, not a window without traffic."""
    if counts.lines and counts.unreadable_lines == counts.lines:
        raise DriftJobError(f"none of the {counts.lines} capture lines could be read: {counts.first_error}")
    if counts.in_window and counts.unreadable_requests == counts.in_window:
        raise DriftJobError(
            f"none of the {counts.in_window} captured requests could be read: {counts.first_error}"
        )


# ---------------------------------------------------------------------------------------------
# Outputs: the violations file, the numbers, the readable page and the metrics.


def metric_data(report: DriftReport, endpoint: str) -> list[MetricDatum]:
    """The alarmed metrics (dimension Endpoint) and, per feature, the same names with a Feature
    dimension: another dimension set is another CloudWatch metric, which no alarm watches."""
    data = [
        MetricDatum(name, value, {"Endpoint": endpoint}) for name, value in report.metric_values().items()
    ]
    for f in report.features:
        if f.rows:
            dimensions = {"Endpoint": endpoint, "Feature": f.name}
            data.append(MetricDatum(FEATURE_DRIFT_METRIC, f.psi, dimensions))
            data.append(MetricDatum(MISSING_RATE_METRIC, f.missing_rate_increase, dimensions))
    return data


def write_outputs(report: DriftReport, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"violations": out / VIOLATIONS_FILE, "report": out / REPORT_JSON, "html": out / REPORT_HTML}
    paths["violations"].write_text(json.dumps(report.constraint_violations(), indent=2), encoding="utf-8")
    paths["report"].write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths


def read_lake(
    lake: ClaimsLake, baseline: Baseline, start: datetime | None, end: datetime | None
) -> tuple[DriftAccumulator, CaptureCounts]:
    """The window's captured claims and scores from the lake's inferences table, chunk by chunk."""
    started = time.perf_counter()
    accumulator = DriftAccumulator(
        baseline.spec, baseline.statistics, baseline.model_version, personal_fields(baseline.spec)
    )
    counts = CaptureCounts()
    try:
        for chunk in lake.query_chunks(inferences_in_window(start, end), CHUNK_CLAIMS):
            records = [orjson.loads(text) for text in chunk["claim"].tolist() if text]
            accumulator.add_records(records)
            accumulator.add_scores(chunk["risk_score"].dropna().to_numpy(dtype=float))
            counts.lines += len(chunk)
            counts.in_window += len(chunk)
    except LakeError as error:
        raise DriftJobError(str(error)) from error
    counts.seconds = time.perf_counter() - started
    return accumulator, counts


def ingest_window(
    capture: Path, lake: ClaimsLake, files: Sequence[Path], baseline: Baseline
) -> tuple[int, list[str]]:
    """The window's capture hours, flattened into the lake (each hour replaces its partition): the
    rows written and the hours (``yyyy-mm-ddThh``)."""
    hours = {hour for hour, paths in capture_hours(capture).items() if set(paths) & set(files)}
    try:
        counts = ingest_capture(capture, lake, baseline.csv_columns, hours=hours)
    except LakeError as error:
        raise DriftJobError(f"the capture could not be written to the lake: {error}") from error
    return counts.rows, sorted(hours)


def ingested(rows: int, hours: int, lake: ClaimsLake) -> str:
    return f"{rows:,} captured claims of {hours} hour(s) written to {lake.describe()}"


def lake_rows(report: DriftReport) -> list[MetricRow]:
    """The run's figures as the lake's monitoring rows: the three alarmed metrics, then per feature."""
    alarmed = set(report.alarms())
    by_metric = {d.metric: d for d in (FEATURE_DRIFT_ALARM, PREDICTION_DRIFT_ALARM, MISSING_RATE_ALARM)}
    thresholds = {name: definition.threshold for name, definition in by_metric.items()}
    rows = [
        MetricRow(name, value, "", by_metric[name].threshold, by_metric[name].key in alarmed)
        for name, value in report.metric_values().items()
    ]
    for f in report.features:
        if f.rows:
            rows.append(
                MetricRow(
                    FEATURE_DRIFT_METRIC,
                    f.psi,
                    f.name,
                    thresholds[FEATURE_DRIFT_METRIC],
                    f.name in report.drifted_features,
                )
            )
            rows.append(
                MetricRow(
                    MISSING_RATE_METRIC,
                    f.missing_rate_increase,
                    f.name,
                    thresholds[MISSING_RATE_METRIC],
                    f.name in report.features_missing_more,
                )
            )
    return rows


def run(config: DriftJobConfig, metrics: MetricsPublisher | None = None) -> DriftReport:
    """The whole job, or its phase when sharded; ``metrics`` defaults to the publisher the
    environment names. A map returns its shard's figures, which it neither writes nor publishes."""
    if config.phase == "map":
        return run_map(config)
    if config.phase == "reduce":
        return run_reduce(config, metrics)
    if config.source == "capture" and not config.capture.is_dir():
        raise DriftJobError(f"no capture folder at {config.capture} (is data capture on?)")
    with tempfile.TemporaryDirectory(prefix="drift-model-") as scratch:
        baseline = load_baseline(model_folder(config.model, Path(scratch)))
    files = files_in_window(config.capture, config.start, config.end) if config.capture.is_dir() else []
    notes = []
    if config.lake is not None and files:
        rows, hours = ingest_window(config.capture, config.lake, files, baseline)
        notes.append(ingested(rows, len(hours), config.lake))
    if config.source == "lake":
        assert config.lake is not None
        log(f"model {baseline.model_version or '?'}; the window from {config.lake.describe()}")
        accumulator, counts = read_lake(config.lake, baseline, config.start, config.end)
        notes.insert(
            0, f"{counts.in_window:,} claims in the window from the lake, read in {counts.seconds:.1f} s"
        )
    else:
        log(f"model {baseline.model_version or '?'}; {len(files)} capture file(s) in {config.capture}")
        accumulator, counts = read_capture(files, baseline, config.start, config.end)
        notes.insert(
            0,
            f"{counts.in_window:,} exchanges in the window from {counts.lines:,} capture lines in "
            f"{counts.files} file(s), read in {counts.seconds:.1f} s",
        )
    return conclude(config, baseline, accumulator, counts, notes, metrics)


def conclude(
    config: DriftJobConfig,
    baseline: Baseline,
    accumulator: DriftAccumulator,
    counts: CaptureCounts,
    notes: list[str],
    metrics: MetricsPublisher | None,
) -> DriftReport:
    """From the window's counts (read at once or merged from shards): the report, its outputs, the
    lake's figures and the metrics."""
    report = accumulator.report()
    skipped = counts.unreadable_lines + counts.unreadable_requests + counts.unreadable_responses
    if skipped:
        notes.append(
            f"skipped {counts.unreadable_lines} unreadable lines, {counts.unreadable_requests} requests "
            f"and {counts.unreadable_responses} responses; first: {counts.first_error}"
        )
    unmonitored = sorted(personal_fields(baseline.spec))
    if unmonitored:
        notes.append(f"not monitored (the capture drops or pseudonymizes them): {', '.join(unmonitored)}")
    if report.claims == 0:
        notes.append("no captured claims in the window: nothing to compare, no metrics published")
    report = replace(report, window=_window(config), notes=notes)
    paths = write_outputs(report, config.output)
    if config.lake is not None and report.claims:
        try:
            write_monitoring(
                config.lake,
                "drift",
                config.run_id,
                lake_rows(report),
                window=(config.start, config.end),
                model_version=report.model_version,
            )
        except LakeError as error:
            raise DriftJobError(f"the run's figures could not be written to the lake: {error}") from error
    if report.claims:
        if metrics is None:
            from shared.adapters.metrics import metrics_from_env

            metrics = metrics_from_env()
        metrics.publish(MONITORING_NAMESPACE, metric_data(report, config.endpoint))
    verdict = f"ALARM ({', '.join(report.alarms())})" if report.alarmed else "no alarm"
    log(
        f"{report.claims:,} claims, {report.scored:,} scores: {verdict}; "
        f"max feature PSI {report.feature_drift_psi_max:.3f}, prediction PSI "
        f"{report.prediction_drift_psi:.3f}; drifted: {', '.join(report.drifted_features) or 'none'}"
    )
    log(f"wrote {', '.join(str(p) for p in paths.values())}")
    return report


def _window(config: DriftJobConfig) -> dict[str, str]:
    return {
        "start": config.start.isoformat() if config.start else "",
        "end": config.end.isoformat() if config.end else "",
        "endpoint": config.endpoint,
    }


# ---------------------------------------------------------------------------------------------
# Sharded: map (one instance's shard) and reduce (the partials merged).


def run_map(config: DriftJobConfig) -> DriftReport:
    """This instance's shard: its counts into ``<output>/<host>/partial.json`` and, with a lake, its
    shard's inferences rows beside them (the reduce writes them to the lake, hour by hour)."""
    try:
        cluster = cluster_from(config.resource_config)
    except PartialsError as error:
        raise DriftJobError(str(error)) from error
    with tempfile.TemporaryDirectory(prefix="drift-model-") as scratch:
        baseline = load_baseline(model_folder(config.model, Path(scratch)))
    # An instance beyond the hour's object count gets no shard, maybe no folder: it counts nothing.
    files = files_in_window(config.capture, config.start, config.end) if config.capture.is_dir() else []
    log(f"map on {cluster.current_host} of {len(cluster.hosts)}: {len(files)} file(s) in {config.capture}")
    accumulator, counts = read_capture(files, baseline, config.start, config.end, check=False)
    folder = config.output / cluster.current_host
    rows, hours = 0, list[str]()
    if config.lake is not None and files:
        rows, hours = ingest_window(config.capture, LocalLake(folder / SHARD_LAKE), files, baseline)
    partial = Partial(
        host=cluster.current_host,
        hosts=cluster.hosts,
        window=_window(config),
        model_version=baseline.model_version,
        spec_json=baseline.spec.to_json(),
        statistics=baseline.statistics,
        state=accumulator_state(accumulator),
        capture=asdict(counts),
        lake_hours=tuple(hours),
        lake_rows=rows,
    )
    path = write_partial(config.output, partial)
    log(
        f"{counts.in_window:,} exchanges ({accumulator.claims:,} claims) of {counts.lines:,} lines in "
        f"{counts.seconds:.1f} s; wrote {path}; nothing published (the reduce does)"
    )
    return accumulator.report()


def _capture_counts(partials: Sequence[Partial]) -> CaptureCounts:
    merged = CaptureCounts()
    known = {f.name for f in fields(CaptureCounts)}
    for partial in partials:
        shard = CaptureCounts(**{k: v for k, v in partial.capture.items() if k in known})
        merged.merge(shard)
        merged.seconds = max(merged.seconds, shard.seconds)  # the shards read side by side
    return merged


def run_reduce(config: DriftJobConfig, metrics: MetricsPublisher | None = None) -> DriftReport:
    """The map's partials merged: the window's report, lake rows and metrics, as one instance gives."""
    try:
        partials = read_partials(config.partials)
        first = partials[0]
        if first.window != _window(config):
            raise PartialsError(f"the partials are of the window {first.window}, not {_window(config)}")
        spec = FeatureSpec.model_validate_json(first.spec_json)
        accumulator = merge(partials, personal_fields(spec))
    except PartialsError as error:
        raise DriftJobError(str(error)) from error
    baseline = Baseline(spec, first.statistics, first.model_version)
    counts = _capture_counts(partials)
    check_readable(counts)
    hosts = [p.host for p in partials]
    log(f"reduce: model {baseline.model_version or '?'}; partials of {', '.join(hosts)}")
    notes = [
        f"{counts.in_window:,} exchanges in the window from {counts.lines:,} capture lines in "
        f"{counts.files} file(s), read in {counts.seconds:.1f} s on {len(hosts)} instances"
    ]
    hours = sorted({h for p in partials for h in p.lake_hours})
    if config.lake is not None and hours:
        notes.append(ingested(write_shard_rows(config.lake, partials, hours), len(hours), config.lake))
    return conclude(config, baseline, accumulator, counts, notes, metrics)


def write_shard_rows(lake: ClaimsLake, partials: Sequence[Partial], hours: Sequence[str]) -> int:
    """Each hour's partition written once, from every shard's rows of that hour (each map instance
    held only its share, so none could replace the partition itself)."""
    rows = 0
    for hour in hours:
        day, hh = hour.split("T")
        files = shard_inference_files(partials, hour)
        try:
            rows += lake.write(INFERENCES, {"dt": day, "hour": hh}, parquet_frames(files, CHUNK_CLAIMS))
        except LakeError as error:
            raise DriftJobError(f"the capture could not be written to the lake: {error}") from error
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(config_from(argv, os.environ))
    except DriftJobError as error:
        print(f"[drift] failed: {error}", file=sys.stderr, flush=True)
        return EXIT_UNREADABLE
    return 0


# ---------------------------------------------------------------------------------------------
# The readable report: one self-contained page, plots inlined as PNG (as the evaluation report).

_STYLE: Final = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2933}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d9e2ec}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d9e2ec;padding:.3rem .6rem;
text-align:right}th{background:#f0f4f8}td:first-child,th:first-child{text-align:left}
.alarm{color:#b42318;font-weight:600}.ok{color:#0b7a3e;font-weight:600}.note{color:#52606d;font-size:.9rem}
figure{margin:0}figcaption{font-size:.85rem;color:#52606d;text-align:center}
"""


FEATURE_COLUMNS: Final = (
    "feature",
    "role",
    "kind",
    "PSI",
    "test",
    "statistic",
    "p-value",
    "missing (training)",
    "missing now",
    "wrong type",
)


@dataclass
class _Page:
    parts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], table_id: str) -> None:
        def cell(value: Any) -> str:
            return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))

        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
        self.add(f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any, caption: str, plot_id: str) -> str:
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)  # laid out by tight_layout: one drawing, not two
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure id="{plot_id}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _psi_plot(report: DriftReport) -> str:
    plt = _pyplot()
    features = [f for f in report.features if f.rows]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(features) + 1.2))
    names = [f.name for f in features][::-1]
    values = [f.psi for f in features][::-1]
    colors = ["#b42318" if v > FEATURE_DRIFT_ALARM.threshold else "#3e7cb1" for v in values]
    ax.barh(names, values, color=colors)
    ax.axvline(FEATURE_DRIFT_ALARM.threshold, color="#b42318", linestyle="--", label="alarm threshold")
    ax.set(xlabel="PSI against the training data", title="Feature drift (PSI)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _png(fig, "PSI per feature; the dashed line is the alarm's threshold", "plot-psi")


def _shares_plot(drifts: Sequence[FeatureDrift], plot_id: str, caption: str) -> str:
    plt = _pyplot()
    columns = 3
    rows = (len(drifts) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(12, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(drifts) :]:
        ax.axis("off")
    for ax, f in zip(axes.flat, drifts, strict=False):
        positions = range(len(f.bins))
        ax.bar([p - 0.2 for p in positions], f.baseline_shares, width=0.4, label="training", color="#9fb3c8")
        ax.bar([p + 0.2 for p in positions], f.current_shares, width=0.4, label="traffic", color="#3e7cb1")
        ax.set_xticks(list(positions), f.bins, rotation=60, ha="right", fontsize=6)
        drifted = " (drift)" if f.psi > FEATURE_DRIFT_ALARM.threshold else ""
        ax.set_title(
            f"{f.name}: PSI {f.psi:.3f}{drifted}", fontsize=9, color="#b42318" if drifted else "#1f2933"
        )
        ax.tick_params(axis="y", labelsize=7)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig, caption, plot_id)


def _missing_cells(f: FeatureDrift) -> tuple[float, float, int]:
    return f.baseline_missing_rate, f.current_missing_rate, f.wrong_type


def render_html(report: DriftReport) -> str:
    page = _Page()
    title = f"Drift of {html.escape(report.window.get('endpoint', '') or 'the endpoint')}"
    page.add(f"<h1>{title}</h1>")
    start, end = report.window.get("start") or "the start", report.window.get("end") or "now"
    page.add(
        f'<p class="note">model {html.escape(report.model_version or "?")} · from {html.escape(start)} '
        f"to {html.escape(end)} · {report.claims:,} claims · {report.scored:,} scores</p>"
    )
    for note in report.notes:
        page.add(f'<p class="note">{html.escape(note)}</p>')
    if report.alarmed:
        page.add(f'<p class="alarm" id="verdict">ALARM: {html.escape(", ".join(report.alarms()))}</p>')
    else:
        page.add('<p class="ok" id="verdict">No drift alarm</p>')
    page.add("<h2>Alarmed metrics</h2>")
    thresholds = report.to_dict()["thresholds"]
    page.table(
        ["metric", "value", "alarm above"],
        [[name, value, thresholds[name]["threshold"]] for name, value in report.metric_values().items()],
        "metrics-table",
    )
    violations = report.violations()
    page.add(f"<h2>Violations ({len(violations)})</h2>")
    page.table(
        ["feature", "check", "description"],
        [[v.feature_name, v.constraint_check_type, v.description] for v in violations],
        "violations-table",
    )
    if report.claims == 0:
        page.add('<p class="note">No traffic to compare.</p>')
        return _wrap(page)
    page.add("<h2>Features</h2>")
    page.table(
        FEATURE_COLUMNS,
        [
            (f.name, f.role, f.kind, f.psi, f.test, f.statistic, f.p_value, *_missing_cells(f))
            for f in report.features
        ],
        "features-table",
    )
    page.add(_psi_plot(report))
    if report.prediction is not None and report.prediction.rows:
        p = report.prediction
        page.add(
            f"<h2>Risk scores</h2><p>PSI {p.psi:.3f} (alarm above {PREDICTION_DRIFT_ALARM.threshold:g}),"
            f" KS {p.statistic:.3f} (p={p.p_value:.2g}) over {p.rows:,} scores</p>"
        )
        page.add(_shares_plot([p], "plot-prediction", "Risk score deciles of the validation set: shares"))
    page.add("<h2>Distributions: training against traffic</h2>")
    shown = [f for f in report.features if f.rows]
    page.add(_shares_plot(shown, "plot-features", "Share of values per baseline bin or level"))
    return _wrap(page)


def _wrap(page: _Page) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Drift report</title>'
        f"<style>{_STYLE}</style></head><body>{''.join(page.parts)}</body></html>"
    )


if __name__ == "__main__":
    sys.exit(main())
