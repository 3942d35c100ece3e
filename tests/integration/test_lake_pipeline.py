"""The pipeline writes the claims lake and trains from it: `claims-risk train` leaves its validated
claims in ``training_claims``; a second run takes ``--source athena:<query>`` (DuckDB answers
offline) and records the query, the rows and their hash as its lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from local.cli import main
from shared.adapters.lake import LocalLake
from shared.lake_writers import materialize_source

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lake-home")


def cli(home: Path, *args: str) -> str:
    result = CliRunner().invoke(main, list(args), env={"CLAIMS_RISK_HOME": str(home)}, catch_exceptions=False)
    assert result.exit_code in (0, 2), result.output  # 2: the gates kept the champion
    return result.output


def test_a_run_leaves_its_validated_claims_in_the_lake_and_the_next_trains_from_a_query(home: Path) -> None:
    cli(home, "train", "--rows", "1200", "--run-id", "first")
    counts = json.loads(
        cli(
            home,
            "lake",
            "query",
            "SELECT split, count(*) AS n FROM training_claims GROUP BY split",
            "--format",
            "json",
        )
    )
    by_split = {row["split"]: row["n"] for row in counts}
    first = json.loads((home / "runs" / "first" / "validate" / "train" / "lineage.json").read_text())
    assert sum(by_split.values()) == first["rows_accepted"] and set(by_split) == {
        "train",
        "validation",
        "test",
    }

    query = "athena:SELECT * FROM training_claims WHERE split <> 'test'"
    cli(home, "train", "--source", query, "--run-id", "second")
    second = json.loads((home / "runs" / "second" / "validate" / "train" / "lineage.json").read_text())
    assert second["source"] == query
    assert second["rows_in"] == by_split["train"] + by_split["validation"]
    assert len(second["data_sha256"]) == 64
    # The second run's claims are its own partition; the first run's are untouched.
    runs = cli(
        home, "lake", "query", "SELECT DISTINCT run_id FROM training_claims ORDER BY 1", "--format", "csv"
    )
    assert runs.split() == ["run_id", "first", "second"]


def test_the_same_query_gives_the_same_rows_and_hash(home: Path, tmp_path: Path) -> None:
    lake = LocalLake(home / "lake")
    source = "glue:training_claims"
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    assert materialize_source(source, lake, one, ["claim_id"]) == materialize_source(
        source, lake, two, ["claim_id"]
    )
    assert one.read_bytes() == two.read_bytes()


def test_a_source_that_is_not_the_lakes_is_refused_before_any_job(home: Path) -> None:
    result = CliRunner().invoke(
        main, ["train", "--source", "mysql:select 1"], env={"CLAIMS_RISK_HOME": str(home)}
    )
    assert result.exit_code == 2 and "athena:<query> or glue:<table>" in result.output
    both = CliRunner().invoke(
        main,
        ["train", "--source", "glue:training_claims", "--data", str(home)],
        env={"CLAIMS_RISK_HOME": str(home)},
    )
    assert both.exit_code == 2 and "not both" in both.output
