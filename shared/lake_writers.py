"""What the steps write into the claims lake, as the tables of :mod:`shared.lake` hold it.

The capture is flattened an hour at a time (the hour's folder, as SageMaker lays it out, becomes the
partition ``dt``/``hour``); a re-read hour replaces its partition, so ingesting twice, or again once
the hour has more files, leaves each exchange once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.capture import CapturedExchange, iter_capture_files, parse_capture_line
from shared.lake import INFERENCES, MONITORING_METRICS, OUTCOMES, LakeError, now_utc
from shared.payloads import CSV, JSON, JSON_LINES, PayloadError, media_type, parse_records

if TYPE_CHECKING:
    import pandas as pd

    from shared.ports import ClaimsLake

CHUNK_ROWS: Final = 50_000
_HOUR_FOLDERS: Final = re.compile(r"^\d{4}/\d{2}/\d{2}/\d{2}$")


def decoded_predictions(exchange: CapturedExchange) -> list[dict[str, Any]]:
    """The predictions of a captured response, whichever of the endpoint's formats it used."""
    kind = media_type(exchange.response_type)
    text = exchange.response.decode("utf-8")
    if kind == JSON:
        payload = json.loads(text)
        rows = payload.get("predictions", []) if isinstance(payload, dict) else payload
        return [r for r in rows if isinstance(r, dict)]
    if kind == JSON_LINES:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if kind == CSV:  # claim_id, risk_level, risk_score, confidence, model_version, factors
        return [
            {
                "claim_id": r[0],
                "risk_level": r[1],
                "risk_score": r[2],
                "confidence": r[3],
                "model_version": r[4],
            }
            for r in csv.reader(io.StringIO(text))
            if len(r) >= 5
        ]
    return []


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _inference_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


@dataclass
class IngestCounts:
    hours: int = 0
    files: int = 0
    lines: int = 0
    rows: int = 0
    unreadable: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def inference_rows(line: str, endpoint: str, csv_columns: Sequence[str]) -> list[dict[str, Any]]:
    """One capture line as the inferences table's rows (one per claim); ValueError when unreadable."""
    exchange = parse_capture_line(line)
    when = _inference_time(exchange.inference_time)
    try:
        claims = parse_records(exchange.request, exchange.request_type, csv_columns)
    except PayloadError as error:
        raise ValueError(f"the request cannot be read: {error}") from None
    predictions = decoded_predictions(exchange)
    rows = []
    for position, claim in enumerate(claims):
        answer = predictions[position] if position < len(predictions) else {}
        claim_id = answer.get("claim_id", claim.get("claim_id"))
        rows.append(
            {
                "event_id": exchange.event_id,
                "inference_time": when,
                "position": position,
                "claim_id": None if claim_id is None else str(claim_id),
                "risk_level": None if "risk_level" not in answer else str(answer["risk_level"]).lower(),
                "risk_score": _float(answer.get("risk_score")),
                "confidence": _float(answer.get("confidence")),
                "model_version": str(answer.get("model_version", "")),
                "endpoint": endpoint,
                "claim": orjson.dumps(claim, option=orjson.OPT_SORT_KEYS).decode("utf-8"),
            }
        )
    return rows


def capture_hours(root: Path) -> dict[str, list[Path]]:
    """Capture files by the hour their folders name (``yyyy/mm/dd/hh``), as ``yyyy-mm-ddThh``."""
    hours: dict[str, list[Path]] = {}
    for path in iter_capture_files(root):
        folders = "/".join(path.relative_to(root).parts[-5:-1])
        if _HOUR_FOLDERS.match(folders):
            y, m, d, h = folders.split("/")
            hours.setdefault(f"{y}-{m}-{d}T{h}", []).append(path)
    return hours


def _fingerprint(files: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _hour_frames(
    files: Sequence[Path], root: Path, csv_columns: Sequence[str], counts: IngestCounts
) -> Iterator[pd.DataFrame]:
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for path in files:
        parts = path.relative_to(root).parts  # [endpoint/]variant/yyyy/mm/dd/hh/file
        endpoint = parts[-7] if len(parts) >= 7 else ""
        counts.files += 1
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.strip():
                    continue
                counts.lines += 1
                try:
                    rows.extend(inference_rows(line, endpoint, csv_columns))
                except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
                    counts.unreadable += 1  # a torn last line of a file still being written, or not ours
                if len(rows) >= CHUNK_ROWS:
                    counts.rows += len(rows)
                    yield pd.DataFrame(rows, columns=list(INFERENCES.column_names))
                    rows = []
    counts.rows += len(rows)
    yield pd.DataFrame(rows, columns=list(INFERENCES.column_names))


def ingest_capture(
    root: Path,
    lake: ClaimsLake,
    csv_columns: Sequence[str] = (),
    *,
    hours: Iterable[str] | None = None,
    state_file: Path | None = None,
) -> IngestCounts:
    """Flatten the capture under ``root`` into the inferences table, an hour per partition.

    ``hours`` limits it to those (``yyyy-mm-ddThh``); with ``state_file`` an hour whose files did not
    change since the last ingest is skipped (the local CLI calls this before every query)."""
    counts = IngestCounts()
    found = capture_hours(root) if root.is_dir() else {}
    wanted = set(hours) if hours is not None else set(found)
    state: dict[str, str] = {}
    if state_file is not None and state_file.is_file():
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            state = {}
    for hour in sorted(wanted & set(found)):
        files = found[hour]
        fingerprint = _fingerprint(files)
        if state.get(hour) == fingerprint:
            continue
        day, hh = hour.split("T")
        lake.write(INFERENCES, {"dt": day, "hour": hh}, _hour_frames(files, root, csv_columns, counts))
        counts.hours += 1
        state[hour] = fingerprint
        if state_file is not None:
            state_file.parent.mkdir(parents=True, exist_ok=True)
            temporary = state_file.with_suffix(".tmp")
            temporary.write_text(json.dumps(state, indent=0, sort_keys=True), encoding="utf-8")
            temporary.replace(state_file)
    return counts


def outcomes_frame(labels: Mapping[str, bool], source_file: str) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "claim_id": list(labels),
            "outcome": list(labels.values()),
            "source_file": source_file,
            "loaded_at": now_utc(),
        }
    )


def load_id_of(content: bytes) -> str:
    """A labels file's partition: its content's hash, so loading the same file twice replaces it."""
    return hashlib.sha256(content).hexdigest()[:32]


def write_outcomes(lake: ClaimsLake, labels: Mapping[str, bool], content: bytes, source_file: str) -> str:
    load_id = load_id_of(content)
    lake.write(OUTCOMES, {"load_id": load_id}, [outcomes_frame(labels, source_file)])
    return load_id


@dataclass(frozen=True)
class MetricRow:
    metric: str
    value: float | None
    feature: str = ""
    threshold: float | None = None
    violated: bool = False
    window: tuple[datetime | None, datetime | None] | None = None  # None: the run's window


def write_monitoring(
    lake: ClaimsLake,
    kind: str,
    run_id: str,
    rows: Sequence[MetricRow],
    *,
    window: tuple[datetime | None, datetime | None] = (None, None),
    model_version: str = "",
) -> int:
    """One monitoring run's figures; a re-run of the same run id replaces them."""
    import pandas as pd

    if kind not in ("drift", "quality"):
        raise LakeError(f"monitoring runs are drift or quality, not {kind!r}")

    def naive(moment: datetime | None) -> datetime | None:
        return None if moment is None else moment.astimezone(UTC).replace(tzinfo=None)

    frame = pd.DataFrame(
        {
            "metric": [r.metric for r in rows],
            "feature": [r.feature for r in rows],
            "value": pd.array([r.value for r in rows], dtype="Float64"),
            "threshold": pd.array([r.threshold for r in rows], dtype="Float64"),
            "violated": [r.violated for r in rows],
            "window_start": pd.Series([naive((r.window or window)[0]) for r in rows], dtype="datetime64[us]"),
            "window_end": pd.Series([naive((r.window or window)[1]) for r in rows], dtype="datetime64[us]"),
            "model_version": model_version,
            "computed_at": now_utc(),
        }
    )
    return lake.write(MONITORING_METRICS, {"kind": kind, "run_id": run_id}, [frame])


def write_training(lake: ClaimsLake, spec_name: str, run_id: str, frames: Iterable[pd.DataFrame]) -> int:
    """The validated claims of a run, chunk by chunk, each row with the split it went to."""
    from shared.lake import training_table

    return lake.write(training_table(spec_name), {"run_id": run_id}, frames)


def rejected_frame(
    rejected: pd.DataFrame, id_column: str, *, reason: str, row_number: str, source_file: str
) -> pd.DataFrame:
    """Validation's rejected rows as the lake keeps them: the reasons, and the row as it came (JSON)."""
    import pandas as pd

    bookkeeping = {reason, row_number, source_file}
    fields = [c for c in rejected.columns if c not in bookkeeping]
    raw = [
        orjson.dumps({k: (None if pd.isna(v) else str(v)) for k, v in zip(fields, row, strict=True)}).decode()
        for row in rejected[fields].itertuples(index=False, name=None)
    ]
    ids = rejected[id_column] if id_column in rejected.columns else pd.Series([None] * len(rejected))
    return pd.DataFrame(
        {
            "source_file": rejected[source_file].astype(str).to_numpy() if len(rejected) else [],
            "row_number": pd.to_numeric(rejected[row_number], errors="coerce").to_numpy()
            if len(rejected)
            else [],
            "claim_id": [None if pd.isna(v) else str(v) for v in ids],
            "reason": rejected[reason].astype(str).to_numpy() if len(rejected) else [],
            "raw": raw,
            "rejected_at": now_utc(),
        }
    )


def write_rejected(lake: ClaimsLake, stage: str, batch_id: str, frames: Iterable[pd.DataFrame]) -> int:
    from shared.lake import REJECTED_ROWS

    return lake.write(REJECTED_ROWS, {"stage": stage, "batch_id": batch_id}, frames)


def materialize_source(source: str, lake: ClaimsLake, target: Path, wanted: Sequence[str]) -> int:
    """Training data from the lake (``athena:<query>`` or ``glue:<table>``) written to one Parquet file,
    chunk by chunk, with the spec's column names restored; the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shared.lake import restore_columns, select_only, table_named

    kind, _, body = source.partition(":")
    if kind == "glue":
        sql = f'SELECT * FROM "{table_named(body.strip()).name}"'
    elif kind == "athena":
        sql = select_only(body)
    else:
        raise LakeError(f"a lake source is athena:<query> or glue:<table>, not {source!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    rows, writer = 0, None
    try:
        for answer in lake.query_chunks(sql):
            chunk = answer.rename(columns=restore_columns([str(c) for c in answer.columns], wanted))
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(target, table.schema)
            writer.write_table(table.cast(writer.schema))
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise LakeError(f"the lake answered nothing for {source!r}")
    return rows


def is_lake_source(source: str) -> bool:
    return source.startswith(("athena:", "glue:"))


def _factors_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode("utf-8")


class BatchMirror:
    """The drop folder's scored and rejected rows, mirrored into ``batch_scored`` and
    ``rejected_rows`` (stage ``batch``) as the file is scored; the partitions (``batch_id``: the
    file's content hash) change only at :meth:`commit`, once the whole file is scored."""

    def __init__(self, lake: ClaimsLake, batch_id: str, source_file: str) -> None:
        from shared.lake import BATCH_SCORED, REJECTED_ROWS

        self.batch_id, self.source_file = batch_id, source_file
        self.started = now_utc()
        self._scored = lake.open_partition(BATCH_SCORED, {"batch_id": batch_id})
        self._rejected = lake.open_partition(REJECTED_ROWS, {"stage": "batch", "batch_id": batch_id})

    def scored(self, frame: pd.DataFrame) -> None:
        if len(frame):
            import pandas as pd

            factors = pd.Series([_factors_text(v) for v in frame["risk_factors"].tolist()], index=frame.index)
            rows = frame.assign(source_file=self.source_file, scored_at=self.started, risk_factors=factors)
            self._scored.write(rows)

    def rejected(self, frame: pd.DataFrame) -> None:
        if len(frame):
            self._rejected.write(frame.assign(source_file=self.source_file, rejected_at=self.started))

    def commit(self) -> tuple[int, int]:
        return self._scored.commit(), self._rejected.commit()

    def abort(self) -> None:
        self._scored.abort()
        self._rejected.abort()
