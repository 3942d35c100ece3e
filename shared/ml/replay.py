"""Replay before promotion: the last days of live traffic, from the claims lake, through the champion
and the challenger, to see what would change for the claims the system actually gets.

A claim *flips* when the two models decide it differently (auto-approve against manual review).
The cost of the change is an expectation, so it is given under each model's own probability: the
challenger believes its decisions are cheaper by construction (its threshold is the cost-optimal
one for its probabilities), so the champion's view of the same flips is the fair counterweight.

The capture keeps claims without their personal fields, so the replayed champion may not answer
exactly what it served: the share of claims where it does is reported as the replay's fidelity.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import orjson

from shared.lake import DEFAULT_REPLAY_DAYS, decisions_in_window

if TYPE_CHECKING:
    import pandas as pd

    from shared.ml.model import RiskModel
    from shared.ports import ClaimsLake

TOP_FLIPS: Final = 10
CHUNK_CLAIMS: Final = 20_000


def expected_cost(probability: float, review: bool, missed: float, needless: float) -> float:
    """A decision's expected cost for a claim of this risk: a missed high-risk claim if approved, a
    needless review if reviewed."""
    return (1.0 - probability) * needless if review else probability * missed


@dataclass
class ReplayTally:
    claims: int = 0
    to_review: int = 0  # approved by the champion, reviewed by the challenger
    to_approve: int = 0
    served_matches: int = 0  # the champion's replayed decision equals the one it served
    served_known: int = 0
    cost_change_challenger_view: float = 0.0
    cost_change_champion_view: float = 0.0
    top: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    versions_served: set[str] = field(default_factory=set)

    def add_flip(self, gap: float, order: int, row: dict[str, Any], keep: int) -> None:
        entry = (gap, -order, row)
        if len(self.top) < keep:
            heapq.heappush(self.top, entry)
        elif entry[:2] > self.top[0][:2]:
            heapq.heapreplace(self.top, entry)


def _score(model: RiskModel, claims: list[dict[str, Any]]) -> list[tuple[float, bool]]:
    answers = model.predict_records(claims, explain=False)
    return [(float(a["risk_score"]), a["risk_level"] == "high") for a in answers]


def replay_frames(
    frames: Iterable[pd.DataFrame],
    champion: RiskModel,
    challenger: RiskModel,
    *,
    top: int = TOP_FLIPS,
) -> ReplayTally:
    costs = challenger.manifest.costs
    tally = ReplayTally()
    for frame in frames:
        claims = [orjson.loads(text) for text in frame["claim"].tolist()]
        if not claims:
            continue
        ours, theirs = _score(challenger, claims), _score(champion, claims)
        served = frame["risk_level"].tolist()
        ids = frame["claim_id"].tolist()
        versions = frame["model_version"].tolist()
        for i, ((p_new, review_new), (p_old, review_old)) in enumerate(zip(ours, theirs, strict=True)):
            order = tally.claims
            tally.claims += 1
            if versions[i] == champion.version and served[i] in ("high", "low"):
                tally.served_known += 1
                tally.served_matches += (served[i] == "high") == review_old
            tally.versions_served.add(str(versions[i] or ""))
            if review_new == review_old:
                continue
            if review_new:
                tally.to_review += 1
            else:
                tally.to_approve += 1
            for probability, attribute in ((p_new, "challenger"), (p_old, "champion")):
                change = expected_cost(
                    probability, review_new, costs.missed_high_risk, costs.needless_review
                ) - expected_cost(probability, review_old, costs.missed_high_risk, costs.needless_review)
                if attribute == "challenger":
                    tally.cost_change_challenger_view += change
                else:
                    tally.cost_change_champion_view += change
            row = {
                "claim_id": str(ids[i] or ""),
                "champion_score": round(p_old, 4),
                "champion_decision": "review" if review_old else "auto-approve",
                "challenger_score": round(p_new, 4),
                "challenger_decision": "review" if review_new else "auto-approve",
            }
            tally.add_flip(abs(p_new - p_old), order, row, top)
    return tally


def replay(
    lake: ClaimsLake,
    champion: RiskModel,
    challenger: RiskModel,
    days: int = DEFAULT_REPLAY_DAYS,
    *,
    now: datetime | None = None,
    top: int = TOP_FLIPS,
) -> dict[str, Any]:
    """The replay section of ``evaluation.json``: the last ``days`` of captured claims."""
    end = (now or datetime.now(UTC)).astimezone(UTC)
    start = end - timedelta(days=days)
    frames = lake.query_chunks(decisions_in_window(start, end), CHUNK_CLAIMS)
    tally = replay_frames(frames, champion, challenger, top=top)
    return replay_summary(tally, champion, challenger, start, end, days)


def replay_summary(
    tally: ReplayTally,
    champion: RiskModel,
    challenger: RiskModel,
    start: datetime,
    end: datetime,
    days: int,
) -> dict[str, Any]:
    flips = tally.to_review + tally.to_approve
    per_thousand = 1000.0 / tally.claims if tally.claims else 0.0
    top_rows = [row for _, _, row in sorted(tally.top, key=lambda e: (-e[0], -e[1]))]
    return {
        "window": {"start": start.isoformat(), "end": end.isoformat(), "days": days},
        "champion": champion.version,
        "challenger": challenger.version,
        "claims": tally.claims,
        "flips": flips,
        "flip_rate": flips / tally.claims if tally.claims else None,
        "approve_to_review": tally.to_review,
        "review_to_approve": tally.to_approve,
        "expected_cost_change": {
            "by_challenger": round(tally.cost_change_challenger_view, 4),
            "by_champion": round(tally.cost_change_champion_view, 4),
            "by_challenger_per_1000_claims": round(tally.cost_change_challenger_view * per_thousand, 4),
            "by_champion_per_1000_claims": round(tally.cost_change_champion_view * per_thousand, 4),
            "costs": challenger.manifest.costs.model_dump(),
        },
        "served_agreement": tally.served_matches / tally.served_known if tally.served_known else None,
        "versions_served": sorted(tally.versions_served),
        "top_flips": top_rows,
    }


def skipped(reason: str) -> dict[str, Any]:
    return {"skipped": reason}


def flip_rate_of(evaluation: Mapping[str, Any]) -> float | None:
    """The replay's flip rate, None when there was no replay or no traffic to replay."""
    section = evaluation.get("replay") or {}
    rate = section.get("flip_rate")
    return None if rate is None else float(rate)
