"""Outcomes are judged against the newest prediction a claim got, from the endpoint or a batch file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from shared.adapters.lake import LocalLake
from shared.lake import BATCH_SCORED, INFERENCES, LABELLED_PREDICTIONS, LABELS_WITHOUT_PREDICTION
from shared.lake_writers import write_outcomes
from shared.ml.quality import load_without_prediction


def _inference(claim_id: str, when: str, level: str, score: float) -> dict[str, object]:
    return {
        "event_id": f"e-{claim_id}",
        "inference_time": datetime.fromisoformat(when),
        "position": 0,
        "claim_id": claim_id,
        "risk_level": level,
        "risk_score": score,
        "confidence": abs(score - 0.5) * 2,
        "model_version": "7",
        "endpoint": "claims-risk",
        "claim": "{}",
    }


def _batch_row(claim_id: str, row: int, when: str, level: str, score: float) -> dict[str, object]:
    return {
        "source_file": "november.csv",
        "row_number": row,
        "claim_id": claim_id,
        "risk_level": level,
        "risk_score": score,
        "confidence": abs(score - 0.5) * 2,
        "model_version": "8",
        "risk_factors": "[]",
        "scored_at": datetime.fromisoformat(when),
    }


def _lake(tmp_path: Path) -> LocalLake:
    lake = LocalLake(tmp_path / "lake")
    captured = [
        _inference("A", "2026-11-02 10:00", "high", 0.9),
        _inference("B", "2026-11-02 11:00", "low", 0.1),
    ]
    lake.write(INFERENCES, {"dt": "2026-11-02", "hour": "10"}, [pd.DataFrame(captured)])
    # B was scored again later in a batch file (as high), C only in the batch file, D nowhere.
    scored = [
        _batch_row("B", 1, "2026-11-03 09:00", "high", 0.8),
        _batch_row("C", 2, "2026-11-03 09:00", "low", 0.2),
    ]
    lake.write(BATCH_SCORED, {"batch_id": "f" * 32}, [pd.DataFrame(scored)])
    return lake


def test_batch_scored_claims_are_judged_with_their_newest_prediction(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    write_outcomes(lake, {"A": True, "B": True, "C": False, "D": True}, b"labels", "labels.csv")
    labelled = lake.query(LABELLED_PREDICTIONS).set_index("claim_id").sort_index()
    assert labelled.index.tolist() == ["A", "B", "C"]
    assert labelled["predicted_high"].tolist() == [True, True, False]  # B's batch answer is newer
    assert labelled["model_version"].tolist() == ["7", "8", "8"]
    assert int(lake.query(LABELS_WITHOUT_PREDICTION)["claims"].iloc[0]) == 1  # D


def test_a_labels_file_of_batch_claims_only_is_not_refused(tmp_path: Path) -> None:
    lake = _lake(tmp_path)
    load_id = write_outcomes(lake, {"C": False}, b"batch labels", "batch.csv")
    answer = lake.query(load_without_prediction(load_id)).to_dict("records")[0]
    assert (int(answer["claims"]), int(answer["without_prediction"])) == (1, 0)
