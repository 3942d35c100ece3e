"""The claims-file reader under random damage: random bytes, broken quoting, bare CRs, mixed
encodings, wrong field counts, lines that are not JSON. Every data line ends scored or rejected (with
its row number and reason), no exception escapes, and only a file that is not text at all is refused
whole."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.ml.batch_scoring import BatchFileError, FileOutputs, score_file
from shared.ml.model import RiskModel
from shared.ml.synthetic import generate_claims

GOOD = generate_claims(40, seed=11).frame
HEADER = ",".join(GOOD.columns)


def good_csv_lines() -> list[bytes]:
    out = io.StringIO()
    GOOD.to_csv(out, index=False, header=False, date_format="%Y-%m-%d", lineterminator="\n")
    return [line.encode() for line in out.getvalue().splitlines()]


def good_json_lines() -> list[bytes]:
    return [
        line.encode() for line in GOOD.to_json(orient="records", lines=True, date_format="iso").splitlines()
    ]


CSV_LINES = good_csv_lines()
JSON_LINES = good_json_lines()


def damaged(line: bytes, kind: str, noise: bytes) -> bytes:
    if kind == "random bytes":
        return noise.replace(b"\n", b" ")
    if kind == "broken quoting":
        return b'"' + line
    if kind == "bare CR":
        middle = len(line) // 2
        return line[:middle] + b"\r" + line[middle:]
    if kind == "latin-1":
        return line.decode().replace("e", "\u00e9").encode("latin-1", errors="replace")
    if kind == "extra field":
        return line + b",surplus"
    if kind == "missing field":
        return line.rsplit(b",", 1)[0]
    if kind == "not JSON":
        return line[: len(line) // 2]
    if kind == "JSON array":
        return b"[" + line + b"]"
    return line


KINDS = st.sampled_from(
    [
        "intact",
        "random bytes",
        "broken quoting",
        "bare CR",
        "latin-1",
        "extra field",
        "missing field",
        "not JSON",
        "JSON array",
    ]
)


@st.composite
def damaged_files(draw: st.DrawFn, suffix: str) -> bytes:
    source = CSV_LINES if suffix == ".csv" else JSON_LINES
    picks = draw(
        st.lists(
            st.tuples(st.integers(0, len(source) - 1), KINDS, st.binary(max_size=60)), min_size=1, max_size=25
        )
    )
    lines = [damaged(source[i], kind, noise) for i, kind, noise in picks]
    blank = draw(st.sampled_from([b"", b"\r", b"  ", b"\t"]))
    body = b"\n".join([*lines[:3], blank, *lines[3:]]) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))
    return (HEADER.encode() + b"\n" + body) if suffix == ".csv" else body


@pytest.fixture(scope="module")
def model(model_dir: Path) -> RiskModel:
    return RiskModel.load(model_dir)


def data_lines(content: bytes, suffix: str) -> int:
    lines = [line for line in content.split(b"\n") if line.strip()]
    return len(lines) - (1 if suffix == ".csv" else 0)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_every_line_of_a_damaged_file_is_scored_or_rejected(
    model: RiskModel, tmp_path_factory: pytest.TempPathFactory, suffix: str
) -> None:
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(content=damaged_files(suffix))
    def check(content: bytes) -> None:
        folder = tmp_path_factory.mktemp("fuzz")
        source = folder / f"claims{suffix}"
        source.write_bytes(content)
        outputs = FileOutputs(scored=folder / f"scored{suffix}", rejected=folder / f"rejected{suffix}")
        try:
            summary = score_file(model, source, outputs, explain=False, chunk_rows=7)
        except BatchFileError as refused:
            # Only a file that is not text at all is refused whole (random bytes may bring NULs).
            assert "not a text file" in str(refused) or "no rows" in str(refused), refused
            return
        assert summary["rows_in"] == data_lines(content, suffix)
        assert summary["scored"] + summary["rejected"] == summary["rows_in"]
        if suffix == ".csv":
            rejected = list(
                csv.DictReader(io.StringIO(outputs.rejected.read_text(encoding="utf-8"), newline=""))
            )
            assert len(rejected) == summary["rejected"]
            assert all(r["reason"] and int(r["row_number"]) >= 1 for r in rejected)

    check()


@pytest.mark.parametrize(
    ("head", "why"),
    [
        (b"\xff\xfeclaim_id,claim_amount\n".decode("latin-1").encode("utf-16"), "UTF-16"),
        (b"PK\x03\x04\x14\x00\x06\x00", "ZIP"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"claim_id\n\x00\x01\x02binary", "NUL"),
    ],
)
def test_a_file_that_is_not_text_is_refused_whole_with_why(
    model: RiskModel, tmp_path: Path, head: bytes, why: str
) -> None:
    source = tmp_path / "claims.csv"
    source.write_bytes(head + b"\n" * 3)
    with pytest.raises(BatchFileError, match=why):
        score_file(model, source, FileOutputs(tmp_path / "s.csv", tmp_path / "r.csv"))


def test_a_bom_and_crlf_lines_are_read_as_the_text_they_are(model: RiskModel, tmp_path: Path) -> None:
    source = tmp_path / "claims.csv"
    source.write_bytes(b"\xef\xbb\xbf" + HEADER.encode() + b"\r\n" + b"\r\n".join(CSV_LINES) + b"\r\n")
    summary = score_file(model, source, FileOutputs(tmp_path / "s.csv", tmp_path / "r.csv"), explain=False)
    assert (summary["rows_in"], summary["scored"], summary["rejected"]) == (len(CSV_LINES), len(CSV_LINES), 0)
