"""Processing job: validate raw claims, report data quality, and split train/validation/test.

Runs under SageMaker's processing contract (``python -m sagemaker_jobs.processing.validate``):
raw files under ``<base>/input/raw``, results under ``<base>/output/<name>``, with ``--base-dir``
defaulting to ``/opt/ml/processing`` so the same script runs locally. Every input row ends in a
split or in ``rejected/rejected.csv`` with its reasons. Rows stream through in chunks
(:mod:`shared.ml.staged_validation`): memory does not grow with the file.

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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from sagemaker_jobs.environment import processing_job_name
from sagemaker_jobs.monitoring.record_preprocessor import UNMONITORED_FIELDS
from shared.adapters.lake import lake_from_env
from shared.feature_spec import ColumnKind, FeatureSpec, load_spec
from shared.lake import LakeError
from shared.lake_writers import materialize_source, rejected_frame, write_rejected, write_training
from shared.metric_lines import metric_line
from shared.ml.staged_validation import (
    SOURCE_FILE,
    SPLITS,
    FileColumnsError,
    SplitCounts,
    StagedValidation,
    check_columns,
    rejected_chunks,
    sample_rows,
    split_chunks,
    stage,
    write_rejected_csv,
    write_splits,
)
from shared.ml.validation import REASON, ROW_NUMBER, quality_report

if TYPE_CHECKING:
    from shared.ports import ClaimsLake

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


def sha256_of(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


MONITORING_BASELINE_ROWS = 100_000


def write_monitoring_baseline(
    train_file: Path, spec: FeatureSpec, folder: Path, seed: int, scratch: Path
) -> Path:
    """The claims Model Monitor's baseline job profiles: a sample of the training split as flat JSON
    lines with the fields the endpoint's record preprocessor keeps (no target, no free text, no column
    that leaks the label, no assembled date: none of them reaches the capture)."""
    free_text = {c.name for c in spec.columns if c.kind == ColumnKind.TEXT}
    never_captured = {c.name for c in spec.leakage_columns} | {d.name for d in spec.assembled_dates}
    dropped = {ROW_NUMBER, SOURCE_FILE, spec.target.column, *free_text, *never_captured, *UNMONITORED_FIELDS}
    sample = sample_rows(train_file, MONITORING_BASELINE_ROWS, seed, scratch)
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
    for path in files:  # another spec's file fails the job once, before any file's rows are read
        try:
            check_columns(path, spec)
        except FileColumnsError as error:
            raise ProcessingError(
                f"{error} (checked against spec {spec.name!r}: is it the data's spec?)"
            ) from None
    data_hash = sha256_of(files)
    out = base / "output"
    with tempfile.TemporaryDirectory(prefix="validate-", dir=args.scratch_dir) as tmp:
        scratch = Path(tmp)
        staged = stage(files, spec, scratch, log)
        return _finish(args, spec, staged, files, data_hash, out, lake)


def _finish(
    args: argparse.Namespace,
    spec: FeatureSpec,
    staged: StagedValidation,
    files: list[Path],
    data_hash: str,
    out: Path,
    lake: ClaimsLake | None,
) -> dict[str, object]:
    target = spec.target.column
    classes = {label: n for label, n in staged.class_counts.items() if n}
    enough = staged.accepted_rows >= args.min_rows and len(classes) >= 2 and min(classes.values()) >= 3
    counts = SplitCounts()
    if enough:
        counts = write_splits(
            staged,
            spec,
            out,
            validation=args.validation_fraction,
            test=args.test_fraction,
            seed=args.seed,
            duplicates_file=staged.scratch / "duplicates.parquet",
        )
        if counts.duplicates and staged.summaries:
            staged.summaries[-1].rule_counts[f"{spec.id_column}:duplicate"] += counts.duplicates
    accepted_rows = staged.accepted_rows - counts.duplicates
    report = quality_report(staged.summaries, spec, accepted_rows)
    report["data_sha256"] = data_hash
    (out / "rejected").mkdir(parents=True, exist_ok=True)
    write_rejected_csv(staged, out / "rejected" / "rejected.csv")
    (out / "quality").mkdir(parents=True, exist_ok=True)
    positives = staged.class_counts.get(1, 0)
    report["target_prevalence"] = positives / staged.accepted_rows if staged.accepted_rows else None
    (out / "quality" / "data_quality.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(metric_line("data_quality:score", report["score"]), flush=True)
    print(metric_line("data_quality:rows_rejected", float(report["rows_rejected"])), flush=True)

    if staged.accepted_rows < args.min_rows:
        raise ProcessingError(
            f"only {staged.accepted_rows} valid rows (at least {args.min_rows} needed); see rejected.csv"
        )
    if not enough:
        raise ProcessingError(f"both classes of {target!r} need at least 3 valid rows, got {classes}")
    lineage = {
        "data_sha256": data_hash,
        "source": args.source or "files",
        "source_files": [f.name for f in files],
        "rows_in": report["rows_in"],
        "rows_accepted": accepted_rows,
        "spec": spec.name,
    }
    for name in SPLITS:
        folder = out / name
        (folder / "feature_spec.json").write_text(spec.to_json(), encoding="utf-8")
        (folder / "lineage.json").write_text(json.dumps(lineage, indent=2), encoding="utf-8")
    write_monitoring_baseline(
        out / "train" / "train.parquet", spec, out / "monitor_baseline", args.seed, staged.scratch
    )
    if lake is not None:
        run_id = run_id_of(args, data_hash)
        claims = write_training(lake, spec.name, run_id, split_chunks(out))
        refused = write_rejected(
            lake,
            "training",
            run_id,
            (
                rejected_frame(
                    chunk, spec.id_column, reason=REASON, row_number=ROW_NUMBER, source_file=SOURCE_FILE
                )
                for chunk in rejected_chunks(staged)
            ),
        )
        log(f"lake ({lake.describe()}): {claims:,} claims and {refused:,} rejected rows, run {run_id}")
    log(
        f"{report['rows_in']:,} rows: {accepted_rows:,} accepted "
        f"({', '.join(f'{k} {counts.rows[k]:,}' for k in SPLITS)}), {report['rows_rejected']:,} rejected; "
        f"quality score {report['score']:.3f}"
    )
    return report


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
    parser.add_argument(
        "--scratch-dir", default=None, help="where staged rows and DuckDB's spill go (default: the system's)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except (ProcessingError, ValueError, OSError) as error:  # FileColumnsError is a ValueError
        print(f"[validate] FAILED: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
