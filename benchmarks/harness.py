"""A tiny benchmark harness: each benchmark returns rows of figures; the runner prints and saves them."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    benchmark: str
    subject: str  # what was measured (ours, or the peer it is compared with)
    metric: str
    value: float
    unit: str
    target: str = ""  # e.g. "< 30 s"; empty when there is none
    met: bool | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def judged(
    benchmark: str,
    subject: str,
    metric: str,
    value: float,
    unit: str,
    limit: float,
    *,
    at_least: bool = False,
    notes: str = "",
    extra: dict[str, Any] | None = None,
) -> Figure:
    """A figure with its target; a miss says by how much in the notes."""
    met = value >= limit if at_least else value <= limit
    target = f"{'>=' if at_least else '<='} {limit:,g} {unit}"
    if not met:
        gap = limit - value if at_least else value - limit
        ratio = f"{value / limit:.0%} of the target" if at_least else f"{value / limit:.1f}x the limit"
        notes = f"MISSED by {gap:,.2f} {unit} ({ratio}). {notes}".strip()
    return Figure(benchmark, subject, metric, value, unit, target, met, notes, extra or {})


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}


def save(name: str, figures: list[Figure]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine(),
        "figures": [asdict(f) for f in figures],
    }
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path


def table(figures: list[Figure]) -> str:
    rows = [("benchmark", "subject", "metric", "value", "unit", "target", "met")]
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "NO")
        rows.append(
            (
                f.benchmark,
                f.subject,
                f.metric,
                f"{f.value:,.4g}" if abs(f.value) < 1e5 else f"{f.value:,.0f}",
                f.unit,
                f.target,
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
