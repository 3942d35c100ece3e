"""Processing job: validate raw claims, report data quality, and split train/validation/test.

Runs under SageMaker's processing contract (``python -m sagemaker_jobs.processing.validate``):
raw files under ``<base>/input/raw``, results under ``<base>/output/<name>``, with ``--base-dir``
defaulting to ``/opt/ml/processing`` so the same script runs locally. Every input row ends in a
split or in ``rejected/rejected.csv`` with its reasons.

``--source athena:<query>`` or ``glue:<table>`` reads the raw claims from the claims lake instead.
When a lake is configured (``CLAIMS_RISK_LAKE_*``), the validated claims (with their split) and the
rejected rows go into it too, in the run's own partition.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from sklearn.model_selection import train_test_split

from sagemaker_jobs.environment import processing_job_name
from sagemaker_jobs.monitoring.record_preprocessor import UNMONITORED_FIELDS
from shared.adapters.lake import lake_from_env
from shared.feature_spec import ColumnKind, FeatureSpec, load_spec
from shared.lake import LakeError
from shared.lake_writers import materialize_source, rejected_frame, write_rejected, write_training
from shared.metric_lines import metric_line
from shared.ml.frames import write_spreadsheet_safe_csv
from shared.ml.validation import REASON, ROW_NUMBER, ValidationResult, quality_report, validate_frame

if TYPE_CHECKING:
    from shared.ports import ClaimsLake

CHUNK_ROWS = 200_000
SOURCE_FILE = "source_file"
SPLITS = ("train", "validation", "test")
READABLE = (".csv", ".parquet", ".jsonl", ".json")


class ProcessingError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[validate] {message}", flush=True)


def input_files(raw_dir: Path) -> list[Path]:
    if not raw_dir.is_dir():
        raise ProcessingError(f"no input folder {raw_dir}")
    files = sorted(p for p in raw_dir.iterdir() if p.is_file() and p.suffix in READABLE)
    if not files:
        raise ProcessingError(f"no .csv, .parquet or .jsonl file in {raw_dir}")
    return files


def read_chunks(path: Path) -> Iterator[pd.DataFrame]:
    """CSV is read as text in chunks (memory stays bounded); the validator does the typing."""
    if path.suffix == ".csv":
        yield from pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS)
    elif path.suffix == ".parquet":
        yield pd.read_parquet(path)
    else:
        yield pd.read_json(path, lines=True, dtype=False)


def sha256_of(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def validate_files(
    files: list[Path], spec: FeatureSpec
) -> tuple[pd.DataFrame, pd.DataFrame, list[ValidationResult]]:
    accepted_parts, rejected_parts, results = [], [], []
    for path in files:
        offset = 0
        for chunk in read_chunks(path):
            result = validate_frame(chunk, spec, require_target=True, row_offset=offset)
            result.accepted[ROW_NUMBER] = _accepted_row_numbers(result, offset)
            result.accepted[SOURCE_FILE] = path.name
            result.rejected[SOURCE_FILE] = path.name
            accepted_parts.append(result.accepted)
            rejected_parts.append(result.rejected)
            results.append(result)
            offset += len(chunk)
            log(f"{path.name}: {offset:,} rows read, {sum(len(r) for r in rejected_parts):,} rejected so far")
    accepted = pd.concat(accepted_parts, ignore_index=True)
    rejected = pd.concat(rejected_parts, ignore_index=True)
    # An id repeated across chunks or files is caught here, where all accepted rows meet.
    repeated = accepted[spec.id_column].duplicated(keep="first") & accepted[spec.id_column].notna()
    if repeated.any():
        moved = accepted[repeated].astype("string")
        moved[REASON] = spec.id_column + ": duplicate of an earlier row"
        rejected = pd.concat([rejected, moved], ignore_index=True)
        accepted = accepted[~repeated].reset_index(drop=True)
        results[-1].rule_counts[f"{spec.id_column}:duplicate"] += int(repeated.sum())
    return accepted, rejected, results


def _accepted_row_numbers(result: ValidationResult, offset: int) -> pd.Series:
    rejected_rows = set(result.rejected[ROW_NUMBER].tolist())
    numbers = [i for i in range(offset + 1, offset + result.rows_in + 1) if i not in rejected_rows]
    return pd.Series(numbers, dtype="int64")


def split(
    accepted: pd.DataFrame, target: str, validation: float, test: float, seed: int
) -> dict[str, pd.DataFrame]:
    rest, test_part = train_test_split(accepted, test_size=test, stratify=accepted[target], random_state=seed)
    train_part, validation_part = train_test_split(
        rest, test_size=validation / (1.0 - test), stratify=rest[target], random_state=seed
    )
    return {"train": train_part, "validation": validation_part, "test": test_part}


MONITORING_BASELINE_ROWS = 100_000


def write_monitoring_baseline(train: pd.DataFrame, spec: FeatureSpec, folder: Path, seed: int) -> Path:
    """The claims Model Monitor's baseline job profiles: the training split as flat JSON lines with
    the fields the endpoint's record preprocessor keeps (no target, no free text)."""
    free_text = {c.name for c in spec.columns if c.kind == ColumnKind.TEXT}
    dropped = {ROW_NUMBER, SOURCE_FILE, spec.target.column, *free_text, *UNMONITORED_FIELDS}
    sample = train.sample(n=min(len(train), MONITORING_BASELINE_ROWS), random_state=seed)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "claims.jsonl"
    sample.drop(columns=[c for c in sample.columns if c in dropped]).to_json(
        target, orient="records", lines=True, date_format="iso"
    )
    return target


def run_id_of(args: argparse.Namespace, data_hash: str) -> str:
    """The run's partition in the lake: given, else SageMaker's job name, else the data's hash."""
    return str(args.run_id or processing_job_name() or f"data-{data_hash[:16]}")


def raw_files(args: argparse.Namespace, base: Path, spec: FeatureSpec, lake: ClaimsLake | None) -> list[Path]:
    """The files to validate: the raw input, or what the lake answers for ``--source``."""
    if not args.source:
        return input_files(base / "input" / "raw")
    if lake is None:
        raise ProcessingError(f"--source {args.source!r} needs the claims lake (CLAIMS_RISK_LAKE_*)")
    target = base / "lake-source" / "claims.parquet"
    wanted = [c.name for c in spec.columns] + [spec.target.column]
    rows = materialize_source(args.source, lake, target, wanted)
    log(f"{rows:,} rows from {lake.describe()}: {args.source}")
    return [target]


def run(args: argparse.Namespace) -> dict[str, object]:
    base = Path(args.base_dir)
    spec_file = base / "input" / "spec" / "feature_spec.json"
    spec = FeatureSpec.from_file(spec_file) if spec_file.is_file() else load_spec(args.spec)
    try:
        lake = lake_from_env()
        files = raw_files(args, base, spec, lake)
    except LakeError as error:
        raise ProcessingError(str(error)) from error
    log(f"spec {spec.name!r}; {len(files)} file(s): {', '.join(f.name for f in files)}")
    data_hash = sha256_of(files)
    accepted, rejected, results = validate_files(files, spec)
    report = quality_report(results, spec, len(accepted))
    report["data_sha256"] = data_hash
    target = spec.target.column
    out = base / "output"

    (out / "rejected").mkdir(parents=True, exist_ok=True)
    write_spreadsheet_safe_csv(rejected, out / "rejected" / "rejected.csv")
    (out / "quality").mkdir(parents=True, exist_ok=True)
    report["target_prevalence"] = float(accepted[target].mean()) if len(accepted) else None
    (out / "quality" / "data_quality.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(metric_line("data_quality:score", report["score"]), flush=True)
    print(metric_line("data_quality:rows_rejected", float(report["rows_rejected"])), flush=True)

    if len(accepted) < args.min_rows:
        raise ProcessingError(
            f"only {len(accepted)} valid rows (at least {args.min_rows} needed); see rejected.csv"
        )
    classes = accepted[target].value_counts()
    if len(classes) < 2 or classes.min() < 3:
        raise ProcessingError(
            f"both classes of {target!r} need at least 3 valid rows, got {classes.to_dict()}"
        )
    parts = split(accepted, target, args.validation_fraction, args.test_fraction, args.seed)
    lineage = {
        "data_sha256": data_hash,
        "source": args.source or "files",
        "source_files": [f.name for f in files],
        "rows_in": report["rows_in"],
        "rows_accepted": len(accepted),
        "spec": spec.name,
    }
    for name, part in parts.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        part.drop(columns=[ROW_NUMBER, SOURCE_FILE]).to_parquet(folder / f"{name}.parquet", index=False)
        (folder / "feature_spec.json").write_text(spec.to_json(), encoding="utf-8")
        (folder / "lineage.json").write_text(json.dumps(lineage, indent=2), encoding="utf-8")
    write_monitoring_baseline(parts["train"], spec, out / "monitor_baseline", args.seed)
    if lake is not None:
        run_id = run_id_of(args, data_hash)
        claims = write_training(lake, spec.name, run_id, _without_bookkeeping(parts))
        refused = write_rejected(
            lake,
            "training",
            run_id,
            [
                rejected_frame(
                    rejected, spec.id_column, reason=REASON, row_number=ROW_NUMBER, source_file=SOURCE_FILE
                )
            ],
        )
        log(f"lake ({lake.describe()}): {claims:,} claims and {refused:,} rejected rows, run {run_id}")
    log(
        f"{report['rows_in']:,} rows: {len(accepted):,} accepted "
        f"({', '.join(f'{k} {len(v):,}' for k, v in parts.items())}), {len(rejected):,} rejected; "
        f"quality score {report['score']:.3f}"
    )
    return report


def _without_bookkeeping(parts: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: part.drop(columns=[ROW_NUMBER]) for name, part in parts.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-dir", default="/opt/ml/processing")
    parser.add_argument("--spec", default="claims", help="built-in spec name or spec JSON path")
    parser.add_argument("--validation-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-rows", type=int, default=50)
    parser.add_argument(
        "--source", default="", help="athena:<query> or glue:<table>: raw claims from the claims lake"
    )
    parser.add_argument("--run-id", default=os.environ.get("CLAIMS_RISK_RUN_ID"), help="the lake partition")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except (ProcessingError, ValueError, OSError) as error:
        print(f"[validate] FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
