"""Issue 14 point 7: a file for another spec fails once, before any row is read, naming the missing and
the unexpected columns: in the drop folder's reader, the AWS trigger's header check and the validate
job. A header-less CSV in the spec's order and a file with a few extra columns still read as before."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sagemaker_jobs.processing import validate
from shared.batch_jobs import BatchSettings, NotAClaimsFile, inspect_claims_file
from shared.feature_spec import FeatureSpec, claims_spec
from shared.ml.batch_scoring import BatchFileError, csv_header, read_chunks
from shared.ml.synthetic import generate_claims, write_claims
from shared.ml.validation import validate_frame
from tests.fraud_table import fraud_spec, fraud_table, write_fraud_case

FRAUD_COLUMNS = list(fraud_table(1).columns)


def fraud_csv(folder: Path, rows: int = 300) -> Path:
    data, _ = write_fraud_case(folder, rows, seed=4)
    return data


def claims_csv(path: Path, rows: int = 300) -> Path:
    write_claims(generate_claims(rows, seed=5), path)
    return path


def the_fraud_spec() -> FeatureSpec:
    return FeatureSpec.model_validate(fraud_spec())


class Heads:
    """The trigger's bounded read of an object's first bytes, from a local file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read_head(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        return self.path.read_bytes()[:limit]


# ---------------------------------------------------------------------------------------------
# The drop folder's reader and the trigger.


def test_a_fraud_table_scored_against_the_claims_spec_fails_once_naming_the_columns(tmp_path: Path) -> None:
    data = fraud_csv(tmp_path)
    with pytest.raises(BatchFileError) as failed:
        next(read_chunks(data, claims_spec()))  # the first chunk: nothing is read before the header
    reason = str(failed.value)
    assert reason.startswith(
        "the header does not fit spec 'claims': 11 of its 11 columns are not in the spec"
    )
    assert "missing required columns: claim_id, claim_amount, claim_type, customer_age" in reason
    assert "unexpected columns: PolicyNumber, Year, Month, AgeOfPolicyHolder" in reason
    assert "fields where the header has" not in reason

    # The AWS trigger refuses it for the same reason, before a job starts.
    size = data.stat().st_size
    found = inspect_claims_file(
        "drop", "incoming/vehicle_claims.csv", size, None, settings=BatchSettings(), heads=Heads(data)
    )
    assert isinstance(found, NotAClaimsFile) and found.refused
    assert found.reason == f"not a claims file: {reason}"


def test_a_claims_file_scored_against_the_fraud_spec_fails_naming_the_columns(tmp_path: Path) -> None:
    data = claims_csv(tmp_path / "claims.csv")
    with pytest.raises(BatchFileError) as failed:
        next(read_chunks(data, the_fraud_spec()))
    reason = str(failed.value)
    assert "does not fit spec 'vehicle_fraud'" in reason
    assert "missing required columns: PolicyNumber;" in reason
    assert "missing optional columns: Year, Month, AgeOfPolicyHolder" in reason
    assert "unexpected columns: claim_id, claim_amount" in reason
    # Parquet and JSON Lines of another spec fail the same way.
    frame = pd.read_csv(data, dtype=str, keep_default_na=False)
    frame.to_parquet(tmp_path / "claims.parquet", index=False)
    with pytest.raises(BatchFileError, match="the file does not fit spec 'vehicle_fraud'"):
        next(read_chunks(tmp_path / "claims.parquet", the_fraud_spec()))
    frame.to_json(tmp_path / "claims.jsonl", orient="records", lines=True)
    with pytest.raises(BatchFileError, match="missing required columns: PolicyNumber"):
        next(read_chunks(tmp_path / "claims.jsonl", the_fraud_spec()))


def test_a_header_less_csv_in_the_specs_order_is_still_read_as_data(tmp_path: Path) -> None:
    claims = pd.read_csv(claims_csv(tmp_path / "claims.csv", rows=20), dtype=str, keep_default_na=False)
    bare = tmp_path / "bare.csv"
    claims.drop(columns=["is_high_risk"]).to_csv(bare, index=False, header=False)
    [chunk] = list(read_chunks(bare, claims_spec()))
    assert len(chunk) == 20 and not chunk.unreadable
    assert list(chunk.frame.columns) == [c.name for c in claims_spec().columns]
    # A header-less fraud table in its spec's order, too: its values are no names (numbers).
    bare_fraud = tmp_path / "bare_fraud.csv"
    fraud_table(20, seed=4).drop(columns=["FraudFound"]).to_csv(bare_fraud, index=False, header=False)
    [chunk] = list(read_chunks(bare_fraud, the_fraud_spec()))
    assert len(chunk) == 20 and chunk.frame.loc[0, "PolicyNumber"] == "P000000"


def test_a_header_less_line_of_another_width_is_still_rejected_row_by_row(tmp_path: Path) -> None:
    data = tmp_path / "short.csv"
    data.write_text("CLM-1,1200,auto\nCLM-2,1300,home\n")  # numbers: data, not names
    [chunk] = list(read_chunks(data, claims_spec()))
    assert len(chunk.unreadable) == 2
    assert all("fields where the header has" in why for _, why in chunk.unreadable.values())


def test_a_few_extra_columns_are_reported_not_fatal(tmp_path: Path) -> None:
    data = claims_csv(tmp_path / "claims.csv", rows=30)
    frame = pd.read_csv(data, dtype=str, keep_default_na=False).assign(branch="north", agent="A7")
    frame.to_csv(data, index=False)
    [chunk] = list(read_chunks(data, claims_spec()))
    assert len(chunk) == 30
    result = validate_frame(chunk.frame, claims_spec(), require_target=False)
    assert result.unknown_columns == ["branch", "agent"]
    assert len(result.accepted) == 30


def test_a_header_lacking_a_required_column_names_it_and_any_stray_column(tmp_path: Path) -> None:
    data = claims_csv(tmp_path / "claims.csv", rows=5)
    frame = pd.read_csv(data, dtype=str, keep_default_na=False).rename(
        columns={"claim_amount": "claim_amout"}
    )
    frame.to_csv(data, index=False)
    with pytest.raises(BatchFileError) as failed:
        next(read_chunks(data, claims_spec()))
    assert (
        str(failed.value)
        == "the header lacks required columns: claim_amount; unexpected columns: claim_amout"
    )


def test_json_lines_lacking_a_field_on_one_row_still_reject_that_row_alone(tmp_path: Path) -> None:
    data = claims_csv(tmp_path / "claims.csv", rows=10)
    records = pd.read_csv(data, dtype=str, keep_default_na=False).to_dict("records")
    del records[0]["claim_id"]
    lines = tmp_path / "claims.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in records))
    [chunk] = list(read_chunks(lines, claims_spec()))
    assert len(chunk) == 10


# ---------------------------------------------------------------------------------------------
# The validate job.


def run_validate(base: Path, spec: str) -> int:
    return validate.main(["--base-dir", str(base), "--spec", spec, "--min-rows", "10"])


def test_the_validate_job_fails_once_on_a_file_for_another_spec_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "input" / "raw"
    fraud_csv(raw)
    claims_csv(raw / "claims.csv")  # a good file beside it: nothing of it is read either
    assert run_validate(tmp_path, "claims") == 1
    error = capsys.readouterr().err
    assert error.count("FAILED") == 1
    assert "vehicle_claims.csv: the header does not fit spec 'claims'" in error
    assert "missing required columns: claim_id, claim_amount" in error
    assert "unexpected columns: PolicyNumber, Year, Month" in error
    assert not (tmp_path / "output").exists(), "no split, no rejected.csv: no row was read"


def test_the_validate_job_refuses_claims_for_the_fraud_spec_and_a_headerless_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, spec = write_fraud_case(tmp_path / "case", 10)
    raw = tmp_path / "input" / "raw"
    claims_csv(raw / "claims.csv")
    assert run_validate(tmp_path, str(spec)) == 1
    error = capsys.readouterr().err
    assert "claims.csv: the header does not fit spec 'vehicle_fraud'" in error
    assert "missing required columns: PolicyNumber" in error and "unexpected columns: claim_id" in error

    # A CSV without its header: its first row read as names fits no spec column.
    (raw / "claims.csv").unlink()
    data = fraud_csv(tmp_path / "fraud")
    (raw / "bare.csv").write_bytes(b"".join(data.read_bytes().splitlines(keepends=True)[1:]))
    assert run_validate(tmp_path, str(spec)) == 1
    assert "a CSV's first line must be its header" in capsys.readouterr().err


def test_the_validate_job_takes_a_file_with_a_few_extra_columns(tmp_path: Path) -> None:
    raw = tmp_path / "input" / "raw"
    data, spec = write_fraud_case(tmp_path / "case", 600, seed=2)
    raw.mkdir(parents=True)
    pd.read_csv(data, dtype=str).assign(Branch="north").to_csv(raw / "claims.csv", index=False)
    assert run_validate(tmp_path, str(spec)) == 0
    quality = json.loads((tmp_path / "output" / "quality" / "data_quality.json").read_text())
    assert quality["unknown_columns"] == ["Branch"] and quality["rows_rejected"] == 0


def test_a_transform_mini_batch_never_takes_a_malformed_row_for_another_specs_header() -> None:
    """A mini-batch's first line may be any row of a file the trigger already checked: a row of text
    of the wrong width is a bad row there (rejected alone), while a whole file's first line like it
    is another spec's header."""
    line = b"north,urban,auto"
    with pytest.raises(BatchFileError, match="unexpected columns: north, urban, auto"):
        csv_header(line, claims_spec())
    columns, had_header = csv_header(line, claims_spec(), whole_file=False)
    assert not had_header and columns == [c.name for c in claims_spec().columns]
