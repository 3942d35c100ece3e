"""The claims lake offline (DuckDB): partitions replaced not duplicated, the queries checked for both
engines, reads that cannot write or leave the lake, and the capture flattened an hour at a time."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
import sqlglot
from sqlglot import exp

from shared.adapters.lake import LocalLake, transpiled
from shared.capture import CapturePolicy, CaptureWriter
from shared.lake import (
    INFERENCES,
    OUTCOMES,
    TABLES,
    LakeError,
    named_queries,
    quality_by_bucket,
    select_only,
    training_table,
)
from shared.lake_writers import MetricRow, ingest_capture, load_id_of, write_monitoring, write_outcomes
from tests.factories import capture_scored_claim

HOUR = dt.datetime(2026, 3, 2, 10, 15, tzinfo=dt.UTC)


def outcomes(lake: LocalLake) -> pd.DataFrame:
    return lake.query("SELECT claim_id, outcome, load_id FROM outcomes ORDER BY claim_id")


def test_a_partition_written_again_is_replaced_not_appended(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    write_outcomes(lake, {"A": True, "B": False}, b"first file", "labels.csv")
    write_outcomes(lake, {"A": True, "B": False}, b"first file", "labels.csv")  # a re-run
    write_outcomes(lake, {"C": True}, b"second file", "more.csv")
    assert outcomes(lake)["claim_id"].tolist() == ["A", "B", "C"]
    assert len(lake.partitions("outcomes")) == 2
    # The same partition with fewer rows keeps only those; with none it is emptied.
    lake.write(OUTCOMES, {"load_id": load_id_of(b"second file")}, [])
    assert outcomes(lake)["claim_id"].tolist() == ["A", "B"]
    assert lake.partitions("outcomes") == [{"load_id": load_id_of(b"first file")}]


def test_rows_that_do_not_fit_the_table_are_refused_by_name(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    wrong = pd.DataFrame({"claim_id": ["A"], "outcome": ["maybe"], "source_file": ["x"], "loaded_at": [None]})
    with pytest.raises(LakeError, match=r"outcomes\.outcome is not boolean"):
        lake.write(OUTCOMES, {"load_id": "x1"}, [wrong])
    with pytest.raises(LakeError, match="lack columns"):
        lake.write(OUTCOMES, {"load_id": "x1"}, [pd.DataFrame({"claim_id": ["A"]})])
    assert lake.partitions("outcomes") == []  # nothing half-written
    assert not any((tmp_path / "lake" / "_staging").iterdir())


@pytest.mark.parametrize("value", ["../escape", "a/b", "", ".hidden", "x" * 200, "semi;colon"])
def test_partition_values_cannot_leave_their_folder(tmp_path: Path, value: str) -> None:
    with pytest.raises(LakeError, match="not a partition value"):
        LocalLake(tmp_path / "lake").write(OUTCOMES, {"load_id": value}, [])


def test_a_training_table_takes_its_columns_from_the_data(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    table = training_table("claims")
    frame = pd.DataFrame({"claim_id": ["A", "B"], "claim_amount": [10.5, 2.0], "split": ["train", "test"]})
    lake.write(table, {"run_id": "r1"}, [frame.iloc[:1], frame.iloc[1:]])
    answer = lake.query("SELECT claim_id, claim_amount, split, run_id FROM training_claims ORDER BY claim_id")
    assert answer.to_dict("list") == {
        "claim_id": ["A", "B"],
        "claim_amount": [10.5, 2.0],
        "split": ["train", "test"],
        "run_id": ["r1", "r1"],
    }
    assert training_table("insurance_claims").name == "training_insurance_claims"


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO outcomes VALUES ('A', true, 'x', now(), 'l')",
        "DROP TABLE outcomes",
        "CREATE TABLE x AS SELECT 1 AS a",
        "DELETE FROM outcomes",
        "SELECT 1; DROP TABLE outcomes",
    ],
)
def test_a_lake_query_only_reads(statement: str) -> None:
    with pytest.raises(LakeError):
        select_only(statement)


def test_reads_are_answered_and_cannot_leave_the_lake(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    write_outcomes(lake, {"A": True}, b"f", "labels.csv")
    assert select_only("WITH o AS (SELECT * FROM outcomes) SELECT count(*) AS n FROM o")
    assert lake.query("SELECT count(*) AS n FROM outcomes")["n"].tolist() == [1]
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n1\n")
    with pytest.raises(LakeError, match="the query failed"):
        lake.query(f"SELECT * FROM read_csv('{outside}')")
    with pytest.raises(LakeError, match="the query failed"):
        lake.query("SELECT * FROM no_such_table")


def test_a_large_answer_comes_in_chunks(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    write_outcomes(lake, {f"C{i:05d}": i % 2 == 0 for i in range(25_000)}, b"big", "labels.csv")
    chunks = list(lake.query_chunks("SELECT claim_id FROM outcomes ORDER BY claim_id", chunk_rows=10_000))
    assert all(len(c) <= 10_000 for c in chunks) and len(chunks) >= 3
    assert pd.concat(chunks)["claim_id"].tolist() == [f"C{i:05d}" for i in range(25_000)]


def test_tables_nobody_wrote_yet_answer_with_no_rows(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    assert lake.tables() == sorted(TABLES)  # a home whose lake folder does not exist yet
    for name, sql in named_queries().items():
        assert len(lake.query(sql)) <= 1, name  # the counts answer one row of zeros, the rest none


# -- one SQL for both engines -----------------------------------------------------------------


def functions_unknown_to_trino(sql: str) -> list[str]:
    """Functions sqlglot does not know in Athena's dialect: a DuckDB (or any other) function slipped in."""
    return sorted({node.name for node in sqlglot.parse_one(sql, read="trino").find_all(exp.Anonymous)})


@pytest.mark.parametrize("name", sorted(named_queries()))
def test_every_query_is_athenas_sql_and_runs_on_duckdb(name: str, tmp_path: Path) -> None:
    sql = named_queries()[name]
    assert functions_unknown_to_trino(sql) == []
    athena = transpiled(sql, "trino")
    assert transpiled(athena, "trino") == athena  # what Athena gets is stable Trino
    LocalLake(tmp_path / "lake").query(sql)  # and DuckDB runs it


def test_the_check_catches_a_duckdb_only_function() -> None:
    slipped = quality_by_bucket("day").replace(
        "count(*) AS labelled", "list_count(list(claim_id)) AS labelled"
    )
    assert "list_count" in functions_unknown_to_trino(slipped)


# -- the capture, flattened -------------------------------------------------------------------


def capture(root: Path, when: dt.datetime, claim_ids: list[str], level: str = "low") -> None:
    writer = CaptureWriter(root, CapturePolicy())
    for claim_id in claim_ids:
        capture_scored_claim(writer, claim_id, level, when, score=0.25)
    writer.close()


def test_the_capture_is_flattened_an_hour_per_partition_once(tmp_path: Path) -> None:
    root, lake = tmp_path / "capture", LocalLake(tmp_path / "lake")
    state = tmp_path / "lake" / "_ingest" / "capture.json"
    capture(root, HOUR, ["A", "B"])
    capture(root, HOUR + dt.timedelta(hours=1), ["C"], level="high")
    first = ingest_capture(root, lake, state_file=state)
    assert (first.hours, first.rows, first.unreadable) == (2, 3, 0)
    assert ingest_capture(root, lake, state_file=state).hours == 0  # nothing changed: nothing read
    capture(root, HOUR, ["D"])  # the first hour grows
    again = ingest_capture(root, lake, state_file=state)
    assert (again.hours, again.rows) == (1, 3)
    rows = lake.query(
        "SELECT claim_id, risk_level, risk_score, model_version, endpoint, dt, hour, claim FROM inferences "
        "ORDER BY claim_id"
    )
    assert rows["claim_id"].tolist() == ["A", "B", "C", "D"]
    assert rows["hour"].tolist() == ["10", "10", "11", "10"] and set(rows["dt"]) == {"2026-03-02"}
    assert rows["risk_level"].tolist() == ["low", "low", "high", "low"]
    assert set(rows["endpoint"]) == {"claims-risk"} and set(rows["model_version"]) == {"m1"}
    assert json.loads(rows["claim"].iloc[0])["claim_id"] == "A"
    assert list(lake.query("SELECT * FROM inferences").columns[: len(INFERENCES.columns)]) == list(
        INFERENCES.column_names
    )


def test_a_torn_capture_line_is_counted_not_fatal(tmp_path: Path) -> None:
    root, lake = tmp_path / "capture", LocalLake(tmp_path / "lake")
    capture(root, HOUR, ["A"])
    [file] = list(root.rglob("*.jsonl"))
    with file.open("a") as out:
        out.write('{"captureData": {"endpointInput"')  # a writer killed mid-line
    counts = ingest_capture(root, lake)
    assert (counts.rows, counts.unreadable) == (1, 1)


def test_monitoring_runs_replace_their_own_rows(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    window = (HOUR, HOUR + dt.timedelta(hours=1))
    rows = [MetricRow("psi", 0.31, "claim_amount", 0.2, True), MetricRow("psi", 0.01, "region", 0.2, False)]
    write_monitoring(lake, "drift", "run-1", rows, window=window, model_version="m1")
    write_monitoring(lake, "drift", "run-1", rows[:1], window=window, model_version="m1")
    write_monitoring(lake, "drift", "run-2", rows, window=window, model_version="m1")
    answer = lake.query(
        "SELECT run_id, count(*) AS n, count_if(violated) AS violated FROM monitoring_metrics "
        "WHERE kind = 'drift' GROUP BY run_id ORDER BY run_id"
    )
    assert answer.to_dict("list") == {"run_id": ["run-1", "run-2"], "n": [1, 2], "violated": [1, 1]}
    with pytest.raises(LakeError, match="drift or quality"):
        write_monitoring(lake, "other", "run-3", rows)
