"""Replay before promotion: live traffic from the lake through the champion and a challenger that is
deliberately different (the same model with a higher threshold), so the claims that must flip are
known in advance: those the champion scores between the two thresholds."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from local.pipeline_runner import PipelineRun
from sagemaker_jobs.processing.evaluate import replay_section
from shared.adapters.lake import LocalLake
from shared.gates import GateConfig, evaluate_gates
from shared.lake import INFERENCES
from shared.ml.model import MANIFEST, RiskModel
from shared.ml.replay import replay
from shared.ml.report import render_report
from shared.ml.synthetic import generate_claims

NOW = dt.datetime(2026, 3, 9, 12, tzinfo=dt.UTC)
CLAIMS = 1_500


@pytest.fixture(scope="module")
def champion(model_dir: Path) -> RiskModel:
    return RiskModel.load(model_dir)


@pytest.fixture(scope="module")
def challenger(model_dir: Path, tmp_path_factory: pytest.TempPathFactory, champion: RiskModel) -> RiskModel:
    """The champion with its threshold 0.1 higher and a version of its own."""
    folder = tmp_path_factory.mktemp("challenger") / "model"
    shutil.copytree(model_dir, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["threshold"] = champion.manifest.threshold + 0.1
    manifest["model_version"] = "challenger-raised-threshold"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return RiskModel.load(folder)


@pytest.fixture(scope="module")
def traffic(champion: RiskModel, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalLake, np.ndarray]:
    """A week of served claims in the lake (and a few older ones the replay must leave out); the
    champion's scores of the week's claims."""
    frame = generate_claims(CLAIMS + 100, seed=41).frame
    columns = [c.name for c in champion.spec.kept_columns if c.name in frame.columns]
    records = json.loads(frame[columns].to_json(orient="records", date_format="iso"))
    served = champion.predict_records(records, explain=False)
    times = [NOW - dt.timedelta(days=6, hours=1) + dt.timedelta(minutes=5 * i) for i in range(CLAIMS)]
    times += [NOW - dt.timedelta(days=9)] * 100  # outside the 7-day window
    rows = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(records))],
            "inference_time": pd.Series([t.replace(tzinfo=None) for t in times], dtype="datetime64[us]"),
            "position": 0,
            "claim_id": [r["claim_id"] for r in records],
            "risk_level": [p["risk_level"] for p in served],
            "risk_score": [p["risk_score"] for p in served],
            "confidence": [p["confidence"] for p in served],
            "model_version": champion.version,
            "endpoint": "claims-risk",
            "claim": [json.dumps(r) for r in records],
        }
    )
    lake = LocalLake(tmp_path_factory.mktemp("replay") / "lake")
    for day, part in rows.groupby(rows["inference_time"].dt.strftime("%Y-%m-%d")):
        lake.write(INFERENCES, {"dt": str(day), "hour": "00"}, [part])
    return lake, champion.scores(frame.iloc[:CLAIMS])


def test_a_raised_threshold_flips_exactly_the_claims_between_the_thresholds(
    traffic: tuple[LocalLake, np.ndarray], champion: RiskModel, challenger: RiskModel
) -> None:
    lake, scores = traffic
    low, high = champion.manifest.threshold, challenger.manifest.threshold
    between = int(((scores >= low) & (scores < high)).sum())
    assert 0 < between < CLAIMS  # the test means something

    replayed = replay(lake, champion, challenger, days=7, now=NOW)
    assert replayed["claims"] == CLAIMS  # the older claims are outside the window
    assert replayed["flips"] == replayed["review_to_approve"] == between
    assert replayed["approve_to_review"] == 0
    assert replayed["flip_rate"] == pytest.approx(between / CLAIMS)
    assert replayed["served_agreement"] == 1.0  # the champion replayed answers what it served
    # Approving claims the champion judged worth a review costs more, by either model's view (they
    # share their probabilities here).
    cost = replayed["expected_cost_change"]
    assert cost["by_challenger"] > 0 and cost["by_challenger"] == pytest.approx(cost["by_champion"])
    top = replayed["top_flips"]
    assert len(top) == 10 and all(f["challenger_decision"] == "auto-approve" for f in top)
    assert all(high > f["champion_score"] >= low - 1e-4 for f in top)


def test_the_flip_rate_gate_is_off_by_default_and_stops_a_challenger_over_it(
    traffic: tuple[LocalLake, np.ndarray], champion: RiskModel, challenger: RiskModel
) -> None:
    lake, _ = traffic
    evaluation = {"test": {}, "replay": replay(lake, champion, challenger, days=7, now=NOW)}
    rate = evaluation["replay"]["flip_rate"]
    assert "replay" not in {g.gate for g in evaluate_gates({"score": 1.0}, evaluation, GateConfig())}

    [stopped] = [
        g
        for g in evaluate_gates({"score": 1.0}, evaluation, GateConfig(max_replay_flip_rate=rate / 2))
        if g.gate == "replay"
    ]
    assert not stopped.passed and f"{rate:.2%}" in stopped.reason
    [allowed] = [
        g
        for g in evaluate_gates({"score": 1.0}, evaluation, GateConfig(max_replay_flip_rate=rate + 0.01))
        if g.gate == "replay"
    ]
    assert allowed.passed


def test_the_report_shows_the_replay(
    traffic: tuple[LocalLake, np.ndarray],
    champion: RiskModel,
    challenger: RiskModel,
    trained_run: PipelineRun,
) -> None:
    lake, _ = traffic
    replayed = replay(lake, champion, challenger, days=7, now=NOW)
    evaluation = json.loads((trained_run.run_dir / "evaluate" / "evaluation" / "evaluation.json").read_text())
    page = render_report({**evaluation, "replay": replayed})
    section = page[page.index('id="replay"') :]
    assert f"{replayed['flips']:,} would change" in section
    assert section.count("<tr>") == 11  # the ten claims that flip most, and the header row
    skipped = render_report({**evaluation, "replay": {"skipped": "no champion yet"}})
    assert "No replay: no champion yet" in skipped


def test_the_evaluate_step_says_why_it_did_not_replay(
    champion: RiskModel, challenger: RiskModel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("CLAIMS_RISK_LAKE_ROOT", "CLAIMS_RISK_LAKE_DATABASE"):
        monkeypatch.delenv(name, raising=False)
    assert replay_section(challenger, None, 7) == {"skipped": "no champion yet: nothing to compare against"}
    assert "replay off" in replay_section(challenger, champion, 0)["skipped"]
    assert "no claims lake" in replay_section(challenger, champion, 7)["skipped"]
    monkeypatch.setenv("CLAIMS_RISK_LAKE_ROOT", str(tmp_path / "empty-lake"))
    empty = replay_section(challenger, champion, 7)
    assert empty["claims"] == 0 and empty["flip_rate"] is None
