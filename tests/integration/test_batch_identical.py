"""The fast batch path writes, byte for byte, what the plain one does.

The reference below is the batch path as it was before it was made fast: every line through the csv
module into object cells, TreeSHAP one claim at a time, the factors built as dicts and left to the
writer to serialise. The file is generated with a fixed seed and then damaged the ways real files
are (quoted commas, CRLF, bad UTF-8, broken quotes, extra fields, repeated ids across chunks,
formula-like ids, blank lines, padded numbers, accents), and scored in chunks small enough that a
repeated id crosses a chunk boundary.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shared.ml.batch_scoring import (
    REJECTED_COLUMNS,
    SCORED_COLUMNS,
    BatchScorer,
    FileOutputs,
    InputFormat,
    RowChunk,
    _line_batches,
    _parquet_chunks,
    _parse_by_line,
    csv_chunk,
    csv_header,
    jsonl_chunk,
    open_writer,
    score_file,
)
from shared.ml.factor_text import _top_columns
from shared.ml.model import RiskModel
from shared.ml.synthetic import generate_claims

TODAY = dt.date(2026, 12, 6)
CHUNK_ROWS = 1000


def damaged_csv(rows: int, seed: int) -> bytes:
    """Generated claims as CSV, with deterministic damage on some lines."""
    text = generate_claims(rows, seed=seed).frame.to_csv(index=False, date_format="%Y-%m-%d")
    header, *lines = text.splitlines()
    at = {name: k for k, name in enumerate(header.split(","))}
    out = [header.encode() + b"\n"]
    for i, line in enumerate(lines):
        cells = line.split(",")
        if i % 97 == 5:
            cells[at["claim_amount"]] = "lots"
        if i % 89 == 6:
            cells[at["claim_type"]] = ""
        if i % 83 == 7:
            cells[at["description"]] = '"storm, then ""flood"""'
        if i % 61 == 8 and i > CHUNK_ROWS:
            cells[at["claim_id"]] = lines[i - CHUNK_ROWS + 3].split(",")[0]  # an id of the chunk before
        if i % 59 == 9:
            cells[at["claim_id"]] = "=HYPERLINK(1)"
        if i % 47 == 10:
            cells[at["vehicle_age"]] = cells[at["police_report"]] = ""
        if i % 43 == 11:
            cells[at["description"]] = "tempête sur le toit"
        if i % 41 == 12:
            cells[at["claim_amount"]] = f" {cells[at['claim_amount']]} "
        if i % 37 == 13:
            cells[at["witnesses"]] = "-0"
        data = ",".join(cells).encode()
        if i % 79 == 15:
            data += b",surplus"
        if i % 73 == 16:
            data = b'"' + data
        if i % 71 == 17:
            data = data.replace(b"CLM", b"CLM\xe9", 1)
        if i % 113 == 18:
            data = data.replace(b",", b",\r", 1)
        out.append(data + (b"\r\n" if i % 67 == 19 else b"\n"))
        if i % 53 == 20:
            out.append(b"   \n")
    return b"".join(out)


class ReferenceScorer(BatchScorer):
    """The scoring as it was: one claim at a time through TreeSHAP, the factors as dicts."""

    def _score(
        self, typed: pd.DataFrame, matrix: np.ndarray, row_numbers: np.ndarray
    ) -> tuple[pd.DataFrame, np.ndarray]:
        model, n = self.model, len(typed)
        if n == 0:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in SCORED_COLUMNS}), np.zeros(0)
        explained = [model.family.explain(matrix[i : i + 1]) for i in range(n)]
        margin = np.concatenate([m for m, _ in explained])
        column_contributions = np.vstack([c for _, c in explained])
        scores = model.manifest.calibration.apply(margin)
        factors = model._top_factors(
            matrix, model._factor_sums(column_contributions), self._level_rows(typed)
        )
        high = scores >= model.manifest.threshold
        scored = pd.DataFrame(
            {
                "row_number": row_numbers.astype(np.int64),
                "claim_id": typed[self.spec.id_column].fillna("").astype(str).to_numpy(dtype=object),
                "risk_level": np.where(high, "high", "low").astype(object),
                "risk_score": np.round(scores, 6),
                "confidence": np.round(np.where(high, scores, 1.0 - scores), 6),
                "model_version": model.version,
                "risk_factors": factors,
            }
        )
        return scored, np.asarray(scores, dtype=np.float64)


def reference_chunks(path: Path, model: RiskModel) -> list[RowChunk]:
    """Every line read by the csv module on its own, cells as Python objects (None when unreadable)."""
    if path.suffix == ".parquet":  # read as it always was: record batches through pyarrow
        return list(_parquet_chunks(path, model.spec, CHUNK_ROWS))
    with path.open("rb") as source:
        batches = list(_line_batches(source, CHUNK_ROWS))
    lines = [line for batch in batches for line in batch]
    if path.suffix == ".jsonl":
        return [
            jsonl_chunk(lines[i : i + CHUNK_ROWS], i + 1, model.spec)
            for i in range(0, len(lines), CHUNK_ROWS)
        ]
    header, _ = csv_header(lines[0], model.spec)
    lines = lines[1:]
    chunks = []
    for start in range(0, len(lines), CHUNK_ROWS):
        part = lines[start : start + CHUNK_ROWS]
        rows, unreadable = _parse_by_line(part, len(header))
        chunk = RowChunk(start + 1, pd.DataFrame(rows, columns=header, dtype=object), unreadable, part)
        id_index = header.index(model.spec.id_column)
        for position in unreadable:  # the claim id of an unreadable line, read leniently
            try:
                cells = next(csv.reader((chunk.raw_text(position),)), [])
            except csv.Error:
                continue
            if len(cells) > id_index:
                chunk.salvaged_ids[position] = cells[id_index].strip()
        chunks.append(chunk)
    return chunks


def reference_outputs(model: RiskModel, path: Path, out: Path) -> tuple[bytes, bytes]:
    kind = {".jsonl": InputFormat.JSON_LINES, ".parquet": InputFormat.PARQUET}.get(
        path.suffix, InputFormat.CSV
    )
    scorer = ReferenceScorer(model, today=TODAY)
    scored = open_writer(out / f"scored{path.suffix}", kind, SCORED_COLUMNS)
    rejected = open_writer(out / f"rejected{path.suffix}", kind, REJECTED_COLUMNS)
    for chunk in reference_chunks(path, model):
        outcome = scorer.score_chunk(chunk)
        scored.write(outcome.scored)
        rejected.write(outcome.rejected)
    scored.close()
    rejected.close()
    return (out / f"scored{path.suffix}").read_bytes(), (out / f"rejected{path.suffix}").read_bytes()


@pytest.fixture(scope="module")
def model(model_dir: Path) -> RiskModel:
    return RiskModel.load(model_dir)


def test_a_damaged_csv_file_is_scored_as_the_plain_path_scores_it(model: RiskModel, tmp_path: Path) -> None:
    source = tmp_path / "claims.csv"
    source.write_bytes(damaged_csv(3000, seed=7))
    fast = FileOutputs(tmp_path / "fast-scored.csv", tmp_path / "fast-rejected.csv")
    summary = score_file(model, source, fast, chunk_rows=CHUNK_ROWS, today=TODAY)
    (tmp_path / "reference").mkdir()
    scored, rejected = reference_outputs(model, source, tmp_path / "reference")
    assert summary["scored"] > 2000 and summary["rejected"] > 200, "the file exercises both outcomes"
    assert "claim_id:duplicate" in summary["rejections_by_rule"], "a repeated id crosses a chunk"
    assert fast.scored.read_bytes() == scored
    assert fast.rejected.read_bytes() == rejected


def test_json_lines_are_scored_as_the_plain_path_scores_them(model: RiskModel, tmp_path: Path) -> None:
    frame = generate_claims(1500, seed=11).frame
    frame.loc[::17, "vehicle_age"] = None
    frame.loc[::29, "claim_amount"] = -5.0
    source = tmp_path / "claims.jsonl"
    frame.to_json(source, orient="records", lines=True, date_format="iso")
    fast = FileOutputs(tmp_path / "fast-scored.jsonl", tmp_path / "fast-rejected.jsonl")
    score_file(model, source, fast, chunk_rows=CHUNK_ROWS, today=TODAY)
    (tmp_path / "reference").mkdir()
    scored, rejected = reference_outputs(model, source, tmp_path / "reference")
    assert fast.scored.read_bytes() == scored
    assert fast.rejected.read_bytes() == rejected


def test_parquet_is_scored_as_the_plain_path_scores_it(model: RiskModel, tmp_path: Path) -> None:
    """Nullable columns too: a rejected row's raw text is rendered from the frame, as before."""
    frame = generate_claims(1500, seed=13).frame
    frame.loc[::13, "vehicle_age"] = None
    frame.loc[::31, "claim_amount"] = -3.0
    frame.loc[::47, "claim_id"] = "=X"
    source = tmp_path / "claims.parquet"
    frame.to_parquet(source, index=False)
    fast = FileOutputs(tmp_path / "fast-scored.parquet", tmp_path / "fast-rejected.parquet")
    score_file(model, source, fast, chunk_rows=CHUNK_ROWS, today=TODAY)
    (tmp_path / "reference").mkdir()
    scored, rejected = reference_outputs(model, source, tmp_path / "reference")
    assert fast.scored.read_bytes() == scored
    assert fast.rejected.read_bytes() == rejected


def test_the_top_factors_are_those_a_stable_sort_puts_first() -> None:
    rng = np.random.default_rng(3)
    magnitude = rng.integers(0, 4, size=(2000, 9)).astype(np.float64)  # many ties
    for k in (1, 5, 9):
        expected = np.argsort(-magnitude, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(_top_columns(magnitude, k), expected)


@pytest.mark.parametrize("line_ends", ["file", "split", "crlf"])
def test_lines_are_read_as_the_csv_module_reads_each_alone(line_ends: str) -> None:
    """Lines as a file gives them (each with its end), as a transform's mini-batch is split (none),
    or with CRLF; a chunk of plain lines and one with damaged lines among them."""
    header, *lines = damaged_csv(400, seed=5).splitlines(keepends=True)
    columns = header.decode().strip().split(",")
    plain = [line for line in lines if b'"' not in line and b"\r" not in line.rstrip(b"\r\n")][:50]
    for chunk_lines in (plain, lines, []):
        given = {
            "file": chunk_lines,
            "split": [line.rstrip(b"\r\n") for line in chunk_lines],
            "crlf": [line.rstrip(b"\r\n") + b"\r\n" for line in chunk_lines],
        }[line_ends]
        given = [line for line in given if line.strip()]
        chunk = csv_chunk(given, columns, 1, "claim_id")
        rows, unreadable = _parse_by_line(given, len(columns))
        assert chunk.unreadable == unreadable
        assert chunk.frame.astype(object).where(chunk.frame.notna(), None).values.tolist() == rows
