"""Reading the splits that jobs pass to each other: a folder of Parquet files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_parquet_folder(folder: Path) -> pd.DataFrame:
    """Every ``*.parquet`` file of a folder, in name order, as one frame."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet file in {folder}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
