"""The claims lake's two adapters: DuckDB over a local folder, Athena and Glue through awswrangler.

Both store the tables of :mod:`shared.lake` as Hive-partitioned Parquet and answer the same SQL,
written in Athena's dialect (DuckDB gets it transpiled by sqlglot). A write replaces its partition:
locally the new files are written aside and swapped in with renames; in S3 awswrangler's
``overwrite_partitions`` deletes the partition's objects before it writes.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from shared.lake import TABLES, LakeError, LakeTable, lake_column, table_named

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

QUERY_CHUNK_ROWS: Final = 100_000
_STAGING: Final = "_staging"
_GLUE_TYPES: Final = {
    "string": "string",
    "bigint": "bigint",
    "double": "double",
    "boolean": "boolean",
    "timestamp": "timestamp",
}


def _arrow_type(kind: str) -> pa.DataType:
    import pyarrow as pa

    return {
        "string": pa.string(),
        "bigint": pa.int64(),
        "double": pa.float64(),
        "boolean": pa.bool_(),
        "timestamp": pa.timestamp("us"),
    }[kind]


def conform(table: LakeTable, frame: pd.DataFrame, partition: Mapping[str, str]) -> pa.Table:
    """The frame as the table stores it: its columns in order and type (a fixed table), or the
    frame's own columns (a training table), without the partition keys (the path holds them)."""
    import pyarrow as pa

    if not table.columns:
        return _as_stored(frame, table, partition)
    missing = [c for c in table.column_names if c not in frame.columns]
    if missing:
        raise LakeError(f"{table.name}: the rows lack columns {missing}")
    arrays = []
    for name, kind in table.columns:
        column = frame[name]
        if kind == "timestamp" and getattr(column.dtype, "tz", None) is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        try:
            arrays.append(pa.array(column, type=_arrow_type(kind), from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as error:
            raise LakeError(f"{table.name}.{name} is not {kind}: {error}") from None
    return pa.Table.from_arrays(arrays, names=list(table.column_names))


def _as_stored(frame: pd.DataFrame, table: LakeTable, partition: Mapping[str, str]) -> pa.Table:
    """A table whose columns follow its data: the names Glue keeps (:func:`shared.lake.lake_column`),
    categories as text, times as UTC microseconds (what Athena reads)."""
    import pandas as pd
    import pyarrow as pa

    names = [lake_column(str(c)) for c in frame.columns]
    if len(set(names)) != len(names):
        raise LakeError(f"{table.name}: two columns have the same name in the lake: {names}")
    clash = set(names) & set(partition)
    if clash:
        raise LakeError(f"{table.name}: columns {sorted(clash)} are the partition's keys")
    data = {}
    for name, (_, given) in zip(names, frame.items(), strict=True):
        column = given
        if isinstance(column.dtype, pd.CategoricalDtype):
            column = column.astype(object).where(column.notna(), None)
        elif pd.api.types.is_datetime64_any_dtype(column.dtype):
            if getattr(column.dtype, "tz", None) is not None:
                column = column.dt.tz_convert("UTC").dt.tz_localize(None)
            column = column.astype("datetime64[us]")
        data[name] = column
    return pa.Table.from_pandas(pd.DataFrame(data), preserve_index=False)


def _empty_view(table: LakeTable) -> str:
    """A typed view with no rows, so a query on a table nobody wrote yet answers nothing, not an error."""
    duck = {"string": "VARCHAR", "bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN"}
    duck["timestamp"] = "TIMESTAMP"
    columns = [f"CAST(NULL AS {duck[k]}) AS {c}" for c, k in table.columns]
    columns += [f"CAST(NULL AS VARCHAR) AS {key}" for key in table.partition]
    return f"SELECT {', '.join(columns)} WHERE FALSE"


def transpiled(sql: str, engine: str) -> str:
    """Athena's SQL as ``engine`` reads it: "duckdb", or "trino" for Athena itself (sqlglot writes
    standard Trino, so a shorthand sqlglot accepts, like ``x::int``, reaches Athena as a CAST)."""
    import sqlglot

    try:
        return ";\n".join(sqlglot.transpile(sql, read="trino", write=engine))
    except sqlglot.errors.ParseError as error:
        raise LakeError(f"not a query Athena would read: {error}") from None


class LocalLake:
    """DuckDB over ``<root>/<table>/<key>=<value>/part-*.parquet``; each query sees only the lake's
    folder (DuckDB's external access is limited to it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return f"DuckDB over {self.root}"

    def tables(self) -> list[str]:
        if not self.root.is_dir():  # nothing written yet: the defined tables, empty
            return sorted(TABLES)
        present = {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("_")}
        return sorted(present | set(TABLES))

    def partitions(self, table: str) -> list[dict[str, str]]:
        spec = table_named(table)
        folder = self.root / spec.name
        found = []
        for marker in sorted(folder.glob("/".join(["*"] * len(spec.partition)))) if folder.is_dir() else []:
            parts = marker.relative_to(folder).parts
            if all("=" in p for p in parts):
                found.append(dict(p.split("=", 1) for p in parts))
        return found

    def open_partition(self, table: LakeTable, partition: Mapping[str, str]) -> LocalPartitionWriter:
        target = self.root / table.name / table.partition_path(partition)
        return LocalPartitionWriter(self, table, partition, target)

    def write(self, table: LakeTable, partition: Mapping[str, str], frames: Iterable[pd.DataFrame]) -> int:
        return write_all(self.open_partition(table, partition), frames)

    def _swap(self, staging: Path, target: Path) -> None:
        """The partition becomes the staged files; a reader sees the old files or the new ones."""
        target.parent.mkdir(parents=True, exist_ok=True)
        retired = self.root / _STAGING / f"retired-{uuid.uuid4().hex}"
        if target.exists():
            target.replace(retired)
        if any(staging.iterdir()):
            staging.replace(target)
        else:  # nothing written: the partition is now empty, i.e. absent
            staging.rmdir()
        shutil.rmtree(retired, ignore_errors=True)

    def _connect(self) -> Any:
        import duckdb

        connection = duckdb.connect(":memory:")
        self.root.mkdir(parents=True, exist_ok=True)
        for name in self.tables():
            table = table_named(name)
            folder = self.root / name
            if folder.is_dir() and any(folder.rglob("*.parquet")):
                pattern = str(folder / "**" / "*.parquet").replace("'", "''")
                source = (
                    f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
                    "union_by_name = true, hive_types_autocast = false)"
                )
            elif table.columns:
                source = _empty_view(table)
            else:
                continue
            connection.execute(f'CREATE VIEW "{name}" AS {source}')
        lake = str(self.root.resolve()).replace("'", "''")
        connection.execute(f"SET allowed_directories = ['{lake}/']")
        connection.execute("SET enable_external_access = false")
        return connection

    def query(self, sql: str) -> pd.DataFrame:
        import duckdb

        connection = self._connect()
        try:
            answer: pd.DataFrame = connection.execute(transpiled(sql, "duckdb")).df()
            return answer
        except duckdb.Error as error:
            raise LakeError(f"the query failed: {error}") from None
        finally:
            connection.close()

    def query_chunks(self, sql: str, chunk_rows: int = QUERY_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        import duckdb

        connection = self._connect()
        try:
            reader = connection.sql(transpiled(sql, "duckdb")).to_arrow_reader(chunk_rows)
            for batch in reader:
                if batch.num_rows:
                    yield batch.to_pandas()
        except duckdb.Error as error:
            raise LakeError(f"the query failed: {error}") from None
        finally:
            connection.close()


class LocalPartitionWriter:
    """Rows written aside, then swapped in for the partition's old files at :meth:`commit`."""

    def __init__(self, lake: LocalLake, table: LakeTable, partition: Mapping[str, str], target: Path) -> None:
        self.lake, self.table, self.partition, self.target = lake, table, dict(partition), target
        self.staging = lake.root / _STAGING / uuid.uuid4().hex
        self.staging.mkdir(parents=True)
        self.rows = 0
        self._writer: Any = None

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow.parquet as pq

        if not len(frame) and self._writer is not None:
            return
        arrow = conform(self.table, frame, self.partition)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.staging / "part-0.parquet", arrow.schema, compression="zstd")
        elif arrow.schema != self._writer.schema:
            raise LakeError(f"{self.table.name}: a later chunk's columns differ from the first's")
        self._writer.write_table(arrow)
        self.rows += arrow.num_rows

    def commit(self) -> int:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.lake._swap(self.staging, self.target)
        return self.rows

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        shutil.rmtree(self.staging, ignore_errors=True)


def write_all(writer: LocalPartitionWriter | AthenaPartitionWriter, frames: Iterable[pd.DataFrame]) -> int:
    """Every frame into the partition, then commit; on any failure the partition is left as it was
    (locally) or emptied (in S3, where the first write already replaced it)."""
    try:
        for frame in frames:
            writer.write(frame)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


class AthenaLake:
    """S3 + Glue + Athena through awswrangler: one Glue database, tables under ``root`` (an S3 URI),
    queries in an Athena workgroup (whose settings hold the results' location and encryption)."""

    def __init__(self, root: str, database: str, workgroup: str, session: Any = None) -> None:
        if not root.startswith("s3://"):
            raise LakeError(f"the lake's root in AWS is an s3:// prefix, not {root!r}")
        self.root = root.rstrip("/")
        self.database = database
        self.workgroup = workgroup
        self.session = session

    def describe(self) -> str:
        return f"Athena over {self.root} (Glue database {self.database}, workgroup {self.workgroup})"

    def tables(self) -> list[str]:
        import awswrangler as wr

        names = wr.catalog.get_tables(database=self.database, boto3_session=self.session)
        return sorted({t["Name"] for t in names} | set(TABLES))

    def partitions(self, table: str) -> list[dict[str, str]]:
        import awswrangler as wr

        spec = table_named(table)
        found = wr.catalog.get_parquet_partitions(
            database=self.database, table=spec.name, boto3_session=self.session
        )
        return [dict(zip(spec.partition, values, strict=True)) for values in found.values()]

    def open_partition(self, table: LakeTable, partition: Mapping[str, str]) -> AthenaPartitionWriter:
        return AthenaPartitionWriter(self, table, partition)

    def write(self, table: LakeTable, partition: Mapping[str, str], frames: Iterable[pd.DataFrame]) -> int:
        return write_all(self.open_partition(table, partition), frames)

    def query(self, sql: str) -> pd.DataFrame:
        import awswrangler as wr

        try:
            frame: pd.DataFrame = wr.athena.read_sql_query(
                transpiled(sql, "trino"),
                database=self.database,
                workgroup=self.workgroup,
                ctas_approach=False,
                boto3_session=self.session,
            )
        except wr.exceptions.QueryFailed as error:
            raise LakeError(f"Athena could not run the query: {error}") from None
        return frame

    def query_chunks(self, sql: str, chunk_rows: int = QUERY_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
        import awswrangler as wr

        # The CTAS approach reads Athena's answer as Parquet, chunk by chunk: for large results.
        try:
            chunks = wr.athena.read_sql_query(
                transpiled(sql, "trino"),
                database=self.database,
                workgroup=self.workgroup,
                ctas_approach=True,
                chunksize=chunk_rows,
                boto3_session=self.session,
            )
            yield from chunks
        except wr.exceptions.QueryFailed as error:
            raise LakeError(f"Athena could not run the query: {error}") from None


def lake_from_env(default_root: Path | None = None) -> LocalLake | AthenaLake | None:
    """The lake the environment names (:class:`shared.settings.LakeSettings`): Athena when a Glue
    database is set, else a local folder (the variable's, or ``default_root``); None for no lake."""
    from shared.settings import LakeSettings

    settings = LakeSettings.load()
    if settings.database:
        if not settings.root:
            raise LakeError("CLAIMS_RISK_LAKE_DATABASE is set but CLAIMS_RISK_LAKE_ROOT (s3://…) is not")
        return AthenaLake(settings.root, settings.database, settings.workgroup)
    if settings.root:
        if settings.root.startswith("s3://"):
            raise LakeError("a lake under s3:// needs its Glue database: set CLAIMS_RISK_LAKE_DATABASE")
        return LocalLake(Path(settings.root))
    return LocalLake(default_root) if default_root is not None else None


class AthenaPartitionWriter:
    """The first chunk replaces the partition (``overwrite_partitions``), later ones append; each
    call registers the partition in Glue."""

    def __init__(self, lake: AthenaLake, table: LakeTable, partition: Mapping[str, str]) -> None:
        self.lake, self.table, self.partition = lake, table, dict(partition)
        self.location = f"{lake.root}/{table.name}/"
        self.path = f"{self.location}{table.partition_path(partition)}/"
        self.rows = 0
        self._first = True

    def write(self, frame: pd.DataFrame) -> None:
        import awswrangler as wr

        if not len(frame) and not self._first:
            return
        data = conform(self.table, frame, self.partition).to_pandas(timestamp_as_object=False)
        for key in self.table.partition:
            data[key] = str(self.partition[key])
        dtype = {c: _GLUE_TYPES[k] for c, k in self.table.columns}
        dtype.update(dict.fromkeys(self.table.partition, "string"))
        wr.s3.to_parquet(
            df=data,
            path=self.location,
            dataset=True,
            database=self.lake.database,
            table=self.table.name,
            partition_cols=list(self.table.partition),
            mode="overwrite_partitions" if self._first else "append",
            dtype=dtype,
            schema_evolution=not self.table.columns,
            glue_table_settings={"description": self.table.description},
            boto3_session=self.lake.session,
        )
        self.rows += len(data)
        self._first = False

    def commit(self) -> int:
        if self._first:  # no rows at all: the partition must still be emptied
            self._delete()
        return self.rows

    def abort(self) -> None:
        if not self._first:  # half a partition is worse than none: a re-run writes it whole
            self._delete()

    def _delete(self) -> None:
        import awswrangler as wr

        wr.s3.delete_objects(self.path, boto3_session=self.lake.session)
