"""``claims-risk lake``: the claims lake, queried in Athena's SQL (DuckDB answers offline).

Before each query the local data capture is flattened into the ``inferences`` table, an hour at a
time and only for hours whose files changed, so a claim scored a moment ago is there.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from shared.lake import TABLES, LakeError, select_only

if TYPE_CHECKING:
    from shared.lake_writers import IngestCounts
    from shared.ports import ClaimsLake

INGEST_STATE = Path("_ingest") / "capture.json"


def _home() -> Path:
    return Path(os.environ.get("CLAIMS_RISK_HOME", "data")).resolve()


def open_lake(home: Path) -> ClaimsLake:
    """The lake the environment names (``CLAIMS_RISK_LAKE_*``), else ``<home>/lake``."""
    from shared.adapters.lake import lake_from_env

    lake = lake_from_env(default_root=home / "lake")
    assert lake is not None  # a default root was given
    return lake


def serving_csv_columns(home: Path) -> list[str]:
    """The column order of header-less CSV requests to the serving model (its spec's kept columns)."""
    from local.cli_monitor import serving_model_dir
    from shared.feature_spec import FeatureSpec, claims_spec
    from shared.ml.model import SPEC_FILE

    try:
        spec = FeatureSpec.model_validate_json((serving_model_dir(home) / SPEC_FILE).read_text("utf-8"))
    except (OSError, ValueError, click.ClickException):
        spec = claims_spec()
    return [c.name for c in spec.kept_columns]


def sync_capture(home: Path, lake: ClaimsLake, capture: Path | None = None) -> IngestCounts | None:
    """Flatten the local capture's changed hours into the lake; None for a lake in AWS (there the
    scheduled drift job ingests the endpoint's capture)."""
    from shared.adapters.lake import LocalLake
    from shared.lake_writers import ingest_capture

    if not isinstance(lake, LocalLake):
        return None
    return ingest_capture(
        capture or home / "capture",
        lake,
        serving_csv_columns(home),
        state_file=lake.root / INGEST_STATE,
    )


@click.group(
    help="The claims lake: captured inferences, batch scores, rejected rows, outcomes, "
    "training claims and monitoring results, queried in Athena's SQL."
)
def lake() -> None:
    pass


@lake.command("query", help='Answer a query, e.g. claims-risk lake query "select count(*) from inferences".')
@click.argument("sql")
@click.option(
    "--format", "shape", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="rows printed as a table (csv and json print all)",
)
def query(sql: str, shape: Literal["table", "csv", "json"], max_rows: int) -> None:
    home = _home()
    try:
        statement = select_only(sql)
        store = open_lake(home)
        sync_capture(home, store)
        answer = store.query(statement)
    except LakeError as error:
        raise click.ClickException(str(error)) from error
    if shape == "csv":
        click.echo(answer.to_csv(index=False), nl=False)
    elif shape == "json":
        click.echo(answer.to_json(orient="records", date_format="iso", indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(show_lines=False)
        for column in answer.columns:
            table.add_column(str(column))
        for row in answer.head(max_rows).itertuples(index=False):
            table.add_row(*("" if v is None else str(v) for v in row))
        Console(highlight=False).print(table)
        more = len(answer) - max_rows
        click.echo(f"{len(answer):,} rows" + (f" ({more:,} not shown)" if more > 0 else ""))


@lake.command("sync", help="Flatten the local data capture into the inferences table now.")
def sync() -> None:
    home = _home()
    try:
        counts = sync_capture(home, open_lake(home))
    except LakeError as error:
        raise click.ClickException(str(error)) from error
    click.echo(json.dumps(counts.as_dict() if counts else {"skipped": "the lake is in AWS"}))


@lake.command("tables", help="The lake's tables and what each holds.")
def tables() -> None:
    home = _home()
    store = open_lake(home)
    click.echo(store.describe())
    for name in store.tables():
        about = TABLES[name].description if name in TABLES else "Validated training claims of a spec."
        click.echo(f"  {name:<22} {about}")
