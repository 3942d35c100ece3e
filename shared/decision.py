"""Decision thresholds and costs: the one place where the triage rule is defined.

A claim is high risk when its calibrated score is at or above the model's decision threshold. The
threshold is chosen at training time to minimise the expected cost of mistakes on the validation set,
given what a missed high-risk claim and a needless manual review cost the insurer.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, Field

from shared.schema import RiskLevel


class DecisionCosts(BaseModel):
    """Relative costs of the two mistakes (any unit, only the ratio matters)."""

    missed_high_risk: float = Field(default=5.0, gt=0, description="cost of auto-approving a high-risk claim")
    needless_review: float = Field(
        default=1.0, gt=0, description="cost of a manual review of a low-risk claim"
    )


DEFAULT_COSTS: Final = DecisionCosts()
# Thresholds are searched on this grid of scores.
THRESHOLD_GRID_STEPS: Final = 200


def risk_level(score: float, threshold: float) -> RiskLevel:
    return RiskLevel.HIGH if score >= threshold else RiskLevel.LOW


def confidence(score: float, threshold: float) -> float:
    """Estimated probability that the assigned level is right: the score for 'high', 1 - score for 'low'.

    The scores are probabilities, so with a cost-chosen threshold below 0.5 a 'high' claim can carry a
    confidence under 0.5: it goes to review because a miss is costly, not because it is likely.
    """
    return score if score >= threshold else 1.0 - score
