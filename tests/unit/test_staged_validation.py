"""Validation in bounded memory: chunks staged, repeats found and the split drawn by DuckDB, with
the guarantees the in-memory version gave (every row once, exact stratification, reproducible)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from shared.feature_spec import load_spec
from shared.ml.staged_validation import SPLITS, stage, write_rejected_csv, write_splits
from shared.ml.synthetic import generate_claims

SPEC = load_spec("claims")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two files of generated claims; the second repeats three ids of the first (one across a chunk
    boundary of 300 rows) and has two broken rows."""
    root = tmp_path_factory.mktemp("raw")
    first = generate_claims(1_500, seed=11).frame.astype(str)
    second = generate_claims(900, seed=12).frame.astype(str)
    second.loc[[0, 1, 2], "claim_id"] = first.loc[[5, 299, 1_400], "claim_id"].to_numpy()
    first.loc[[301], "claim_id"] = first.loc[[299], "claim_id"].to_numpy()  # a repeat inside the first file
    second.loc[[10, 11], "claim_amount"] = ["lots", "-5"]
    first.to_csv(root / "a.csv", index=False)
    second.to_csv(root / "b.csv", index=False)
    return [root / "a.csv", root / "b.csv"]


def run(files: list[Path], out: Path, seed: int) -> tuple[dict[str, pd.DataFrame], int, int]:
    staged = stage(files, SPEC, out / "scratch", log=lambda _: None, chunk_rows=300)
    counts = write_splits(
        staged,
        SPEC,
        out,
        validation=0.15,
        test=0.15,
        seed=seed,
        duplicates_file=out / "scratch" / "dup.parquet",
    )
    rejected = write_rejected_csv(staged, out / "rejected.csv")
    splits = {name: pd.read_parquet(out / name / f"{name}.parquet") for name in SPLITS}
    return splits, counts.duplicates, rejected


def test_every_row_lands_once_and_repeated_ids_are_rejected(files: list[Path], tmp_path: Path) -> None:
    splits, duplicates, rejected = run(files, tmp_path, seed=0)
    kept = pd.concat(splits.values())
    assert duplicates == 4
    assert len(kept) + rejected == 2_400
    assert kept["claim_id"].is_unique
    reasons = pd.read_csv(tmp_path / "rejected.csv", dtype=str)
    assert (reasons["reason"].str.contains("duplicate of an earlier row")).sum() == 4
    assert len(reasons) == rejected == 4 + 2
    # The first of two rows with an id is the one kept (the earlier file, the earlier row).
    assert set(reasons.loc[reasons["reason"].str.contains("duplicate"), "source_file"]) == {"a.csv", "b.csv"}


def test_the_split_is_stratified_exactly_and_reproducible(files: list[Path], tmp_path: Path) -> None:
    splits, _, _ = run(files, tmp_path / "one", seed=0)
    again, _, _ = run(files, tmp_path / "two", seed=0)
    other, _, _ = run(files, tmp_path / "three", seed=1)
    total = pd.concat(splits.values())
    for label in (0, 1):
        members = int((total["is_high_risk"] == label).sum())
        for name, share in (("test", 0.15), ("validation", 0.15)):
            assert int((splits[name]["is_high_risk"] == label).sum()) == round(members * share)
    assert all(splits[n]["claim_id"].tolist() == again[n]["claim_id"].tolist() for n in SPLITS)
    assert set(splits["test"]["claim_id"]) != set(other["test"]["claim_id"])


def test_the_splits_keep_the_validators_types(files: list[Path], tmp_path: Path) -> None:
    splits, _, _ = run(files, tmp_path, seed=0)
    train = splits["train"]
    assert str(train["customer_age"].dtype) == "Int64" and str(train["police_report"].dtype) == "boolean"
    assert pd.api.types.is_datetime64_any_dtype(train["incident_date"])
    assert not {"_order", "row_number", "source_file"} & set(train.columns)
