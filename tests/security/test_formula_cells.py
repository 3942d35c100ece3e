"""No CSV the product writes carries a cell a spreadsheet would run (OWASP's CSV-injection rule),
and real numbers stay numbers: every writer is attacked with the same hostile cells."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from local.dropbox import DropFolderWatcher, WatchSettings
from local.jobs import REPO_ROOT
from shared.csv_safety import FORMULA_TRIGGERS, InertCsvWriter, inert_cell, is_plain_number
from shared.ml.batch_scoring import render_line_results
from shared.ml.synthetic import generate_claims, write_claims
from shared.payloads import render_predictions

HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "=cmd|' /C calc'!A0",
    "+SUM(1,2)",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\uff1d1+1",  # a full-width equals sign
]
NUMBERS = ["-12.5", "+3", "-1e5", "0.25", "-0"]


def risky(cell: str) -> bool:
    return bool(cell) and cell[0] in FORMULA_TRIGGERS and not is_plain_number(cell)


def cells_of(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]


@given(st.text())
def test_a_cell_is_either_safe_as_it_is_or_quoted_and_nothing_else_changes(text: str) -> None:
    out = inert_cell(text)
    assert not risky(out)
    assert out == text or out == "'" + text
    assert (out != text) == risky(text)


@pytest.mark.parametrize("number", NUMBERS)
def test_real_numbers_stay_numbers(number: str) -> None:
    assert inert_cell(number) == number
    assert inert_cell(float(number)) == float(number)


def test_the_model_servers_csv_answers_are_inert() -> None:
    predictions = [
        {"claim_id": bad, "risk_level": "low", "risk_score": 0.1, "confidence": 0.8, "model_version": "v1"}
        for bad in HOSTILE
    ]
    body, _ = render_predictions(predictions, "text/csv")
    cells = cells_of(body.decode())
    assert cells and not any(risky(c) for c in cells)
    assert "'=cmd|' /C calc'!A0" in cells


def test_batch_transform_csv_lines_are_inert() -> None:
    results: list[dict[str, Any]] = [{"claim_id": bad, "error": f"{bad} is not valid"} for bad in HOSTILE]
    cells = cells_of(render_line_results(results, as_csv=True).decode())
    assert len(cells) == 7 * len(HOSTILE) and not any(risky(c) for c in cells)


def test_the_drop_folders_scored_and_rejected_files_are_inert(model_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "dropbox"
    (root / "incoming").mkdir(parents=True)
    source = write_claims(generate_claims(20, seed=5), tmp_path / "claims.csv")
    header, *lines = source.read_text().splitlines()
    hostile_lines = [f"{_quoted(bad)},{_quoted(bad)}" for bad in HOSTILE]  # too few fields: rejected
    (root / "incoming" / "claims.csv").write_text("\n".join([header, *lines, *hostile_lines]) + "\n")
    with DropFolderWatcher(root, lambda: model_dir, WatchSettings(poll_interval_s=0.05, settle_s=0.2)) as w:
        assert [r.outcome for r in w.run(until_idle=True)] == ["scored"]

    rejected = (root / "rejected" / "claims.csv").read_text()
    scored = (root / "scored" / "claims.csv").read_text()
    assert len(list(csv.DictReader(io.StringIO(rejected)))) == len(HOSTILE)
    assert not any(risky(c) for c in cells_of(rejected) + cells_of(scored))
    assert "'=cmd|' /C calc'!A0" in cells_of(rejected), "the claim id is kept, made inert"


def test_the_validate_jobs_rejected_rows_are_inert(tmp_path: Path) -> None:
    frame = generate_claims(300, seed=6).frame
    frame.loc[:9, "claim_type"] = HOSTILE + HOSTILE[:2]  # not an allowed claim type: rejected
    raw = tmp_path / "processing" / "input" / "raw"
    raw.mkdir(parents=True)
    frame.to_csv(raw / "claims.csv", index=False, lineterminator="\r\n")  # CRLF: a lone CR is quoted
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sagemaker_jobs.processing.validate",
            "--base-dir",
            str(tmp_path / "processing"),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    text = (tmp_path / "processing" / "output" / "rejected" / "rejected.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 10
    assert not any(risky(c) for c in cells_of(text))
    assert {r["claim_type"] for r in rows} >= {"'=cmd|' /C calc'!A0", "'+SUM(1,2)"}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (make infra-tools needs it)")
def test_the_web_pages_download_applies_the_same_rule() -> None:
    """The page's csvCell, run by node on the page's own script, agrees with the server's rule."""
    page = (REPO_ROOT / "local" / "web" / "index.html").read_text()
    start = page.index("const FORMULA_START")
    end = page.index("}", page.index("function csvCell")) + 1
    cases = [*HOSTILE, *NUMBERS, "plain", "", "a,b", 'say "hi"', "-", "+", "'already"]
    script = page[start:end] + f"\nprocess.stdout.write(JSON.stringify({json.dumps(cases)}.map(csvCell)));"
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True).stdout
    expected = []
    for case in cases:
        buffer = io.StringIO()
        InertCsvWriter(buffer).writerow([case])
        expected.append(buffer.getvalue().removesuffix("\n"))
    # The page quotes only what needs quoting, as the csv module's minimal quoting does.
    assert json.loads(out) == [e if e != '""' else "" for e in expected]


def _quoted(cell: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([cell])
    return buffer.getvalue()
