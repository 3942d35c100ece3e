"""Model Monitor's record preprocessor: a captured request becomes flat claim records that match the
baseline's columns, and no free text reaches the monitor."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sagemaker_jobs.monitoring import record_preprocessor
from shared.adapters.endpoint import request_body


def captured(claims: list[dict[str, object]]) -> SimpleNamespace:
    """The shape Model Monitor hands the preprocessor: the request as the endpoint received it."""
    return SimpleNamespace(
        endpoint_input=SimpleNamespace(data=request_body(claims).decode(), encoding="JSON", mode="INPUT")
    )


CLAIMS = [
    {"claim_id": "CLM-1", "claim_amount": 1200.0, "claim_type": "auto", "description": "rear ended"},
    {"claim_id": "CLM-2", "claim_amount": 50000.0, "claim_type": "home", "description": None},
]


def test_each_claim_of_a_request_becomes_one_flat_record_without_free_text() -> None:
    records = record_preprocessor.preprocess_handler(captured(CLAIMS))
    assert records == [
        {"claim_amount": 1200.0, "claim_type": "auto"},
        {"claim_amount": 50000.0, "claim_type": "home"},
    ]


def test_only_the_baselines_fields_are_kept_when_model_monitor_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    constraints = tmp_path / "constraints.json"
    constraints.write_text(json.dumps({"features": [{"name": "claim_amount"}]}), encoding="utf-8")
    monkeypatch.setenv("baseline_constraints", str(constraints))
    reloaded = importlib.reload(record_preprocessor)
    try:
        assert reloaded.preprocess_handler(captured(CLAIMS)) == [
            {"claim_amount": 1200.0},
            {"claim_amount": 50000.0},
        ]
    finally:
        monkeypatch.delenv("baseline_constraints")
        importlib.reload(record_preprocessor)


def test_the_preprocessor_needs_nothing_but_the_standard_library() -> None:
    """Model Monitor runs the file on its own, in its own container."""
    import ast

    tree = ast.parse(Path(record_preprocessor.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert {name.split(".")[0] for name in imported} <= {
        "__future__",
        "json",
        "os",
        "collections",
        "pathlib",
        "typing",
    }
