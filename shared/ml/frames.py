"""Frames the jobs pass to each other (a folder of Parquet files) and write for people (CSV)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shared.csv_safety import FORMULA_TRIGGERS, inert_cell


def read_parquet_folder(folder: Path) -> pd.DataFrame:
    """Every ``*.parquet`` file of a folder, in name order, as one frame."""
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet file in {folder}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def inert_text(column: pd.Series) -> pd.Series:
    """The column with every cell a spreadsheet would evaluate made inert (:mod:`shared.csv_safety`).
    Only those cells are touched, found by a vectorised first-character test, so a million-row
    file pays almost nothing; numbers and missing values stay as they are."""
    if column.dtype != object and not pd.api.types.is_string_dtype(column):
        return column
    try:
        first = column.str[:1]  # missing for cells that are not text
    except AttributeError:  # an object column without any text
        return column
    risky = first.isin(FORMULA_TRIGGERS).to_numpy(dtype=bool)
    if not risky.any():
        return column
    out = column.copy()
    out[risky] = [inert_cell(v) for v in column[risky]]
    return out


def write_spreadsheet_safe_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame.to_csv`` with its text cells made inert first, rows ending in CRLF (RFC 4180), so
    the csv module quotes a cell holding a lone CR too."""
    frame.apply(inert_text).to_csv(path, index=False, lineterminator="\r\n")
