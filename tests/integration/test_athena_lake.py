"""The lake's AWS adapter: awswrangler writes Parquet partitions to S3 and registers them in Glue
(against moto's S3 and Glue); queries go to Athena in its dialect (moto's Athena runs no SQL, so
awswrangler's query call is stubbed and what it is asked is checked)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from typing import Any, Final

import awswrangler as wr
import boto3
import pandas as pd
import pytest
from moto import mock_aws

from shared.adapters.lake import AthenaLake, LocalLake, lake_from_env
from shared.lake import INFERENCES, OUTCOMES, LakeError, quality_by_bucket, training_table
from shared.lake_writers import load_id_of, write_outcomes

REGION: Final = "eu-west-1"


@pytest.fixture
def session() -> Iterator[boto3.Session]:
    keys = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        with mock_aws():
            aws = boto3.Session(region_name=REGION)
            aws.client("s3").create_bucket(
                Bucket="claims-data", CreateBucketConfiguration={"LocationConstraint": REGION}
            )
            aws.client("glue").create_database(DatabaseInput={"Name": "claims_risk_dev"})
            yield aws
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def lake_in(session: boto3.Session) -> AthenaLake:
    return AthenaLake("s3://claims-data/lake/", "claims_risk_dev", "claims-risk-dev", session=session)


def keys(session: boto3.Session, prefix: str) -> list[str]:
    listed = session.client("s3").list_objects_v2(Bucket="claims-data", Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_a_table_is_registered_in_glue_as_defined_once(session: boto3.Session) -> None:
    lake = lake_in(session)
    write_outcomes(lake, {"A": True, "B": False}, b"labels", "labels.csv")
    table = session.client("glue").get_table(DatabaseName="claims_risk_dev", Name="outcomes")["Table"]
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == list(OUTCOMES.columns)
    assert [k["Name"] for k in table["PartitionKeys"]] == list(OUTCOMES.partition)
    assert table["StorageDescriptor"]["Location"] == "s3://claims-data/lake/outcomes/"
    assert lake.partitions("outcomes") == [{"load_id": load_id_of(b"labels")}]
    assert "outcomes" in lake.tables()


def test_writing_a_partition_again_replaces_its_objects(session: boto3.Session) -> None:
    lake = lake_in(session)
    write_outcomes(lake, {"A": True, "B": False}, b"labels", "labels.csv")
    write_outcomes(lake, {"A": True, "B": False, "C": True}, b"labels", "labels.csv")
    prefix = f"lake/outcomes/load_id={load_id_of(b'labels')}/"
    assert len(keys(session, prefix)) == 1
    stored = wr.s3.read_parquet("s3://claims-data/lake/outcomes/", dataset=True, boto3_session=session)
    assert sorted(stored["claim_id"]) == ["A", "B", "C"]
    lake.write(OUTCOMES, {"load_id": load_id_of(b"labels")}, [])  # no rows: the partition is emptied
    assert keys(session, prefix) == []


def test_chunks_stream_into_one_partition(session: boto3.Session) -> None:
    lake = lake_in(session)
    moment = dt.datetime(2026, 3, 2, 10)

    def chunk(ids: list[str]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "event_id": ids,
                "inference_time": [moment] * len(ids),
                "position": [0] * len(ids),
                "claim_id": ids,
                "risk_level": ["low"] * len(ids),
                "risk_score": [0.1] * len(ids),
                "confidence": [0.8] * len(ids),
                "model_version": ["m1"] * len(ids),
                "endpoint": ["claims-risk-dev"] * len(ids),
                "claim": ["{}"] * len(ids),
            }
        )

    assert lake.write(INFERENCES, {"dt": "2026-03-02", "hour": "10"}, [chunk(["A", "B"]), chunk(["C"])]) == 3
    stored = wr.s3.read_parquet("s3://claims-data/lake/inferences/", dataset=True, boto3_session=session)
    assert sorted(stored["claim_id"]) == ["A", "B", "C"] and set(stored["hour"]) == {"10"}
    glue = session.client("glue").get_table(DatabaseName="claims_risk_dev", Name="inferences")["Table"]
    assert [(c["Name"], c["Type"]) for c in glue["StorageDescriptor"]["Columns"]] == list(INFERENCES.columns)


def test_a_training_table_follows_its_data(session: boto3.Session) -> None:
    lake = lake_in(session)
    frame = pd.DataFrame({"claim_id": ["A"], "claim_amount": [12.5], "split": ["train"]})
    lake.write(training_table("claims"), {"run_id": "20260302-1000"}, [frame])
    glue = session.client("glue").get_table(DatabaseName="claims_risk_dev", Name="training_claims")["Table"]
    assert [c["Name"] for c in glue["StorageDescriptor"]["Columns"]] == ["claim_id", "claim_amount", "split"]


def test_queries_reach_athena_in_its_dialect(session: boto3.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict[str, Any]] = []

    def read_sql_query(sql: str, **options: Any) -> Any:
        asked.append({"sql": sql, **options})
        answer = pd.DataFrame({"n": [3]})
        return iter([answer]) if options.get("chunksize") else answer

    monkeypatch.setattr(wr.athena, "read_sql_query", read_sql_query)
    lake = lake_in(session)
    assert lake.query("SELECT count(*)::bigint AS n FROM outcomes")["n"].tolist() == [3]
    assert [len(c) for c in lake.query_chunks(quality_by_bucket("week"), chunk_rows=1000)] == [1]
    first, second = asked
    assert first["sql"] == "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM outcomes"  # no DuckDB shorthand
    assert (first["database"], first["workgroup"], first["ctas_approach"]) == (
        "claims_risk_dev",
        "claims-risk-dev",
        False,
    )
    assert second["ctas_approach"] is True and second["chunksize"] == 1000
    assert "DATE_TRUNC('WEEK', inference_time)" in second["sql"]


def test_the_environment_chooses_the_lake(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("CLAIMS_RISK_LAKE_ROOT", "CLAIMS_RISK_LAKE_DATABASE", "CLAIMS_RISK_LAKE_WORKGROUP"):
        monkeypatch.delenv(name, raising=False)
    assert lake_from_env() is None  # a job with no lake configured writes none
    assert isinstance(lake_from_env(tmp_path), LocalLake)
    monkeypatch.setenv("CLAIMS_RISK_LAKE_ROOT", "s3://claims-data/lake/")
    with pytest.raises(LakeError, match="CLAIMS_RISK_LAKE_DATABASE"):
        lake_from_env()
    monkeypatch.setenv("CLAIMS_RISK_LAKE_DATABASE", "claims_risk_dev")
    monkeypatch.setenv("CLAIMS_RISK_LAKE_WORKGROUP", "claims-risk-dev")
    chosen = lake_from_env(tmp_path)
    assert isinstance(chosen, AthenaLake)
    assert (chosen.root, chosen.database, chosen.workgroup) == (
        "s3://claims-data/lake",
        "claims_risk_dev",
        "claims-risk-dev",
    )
