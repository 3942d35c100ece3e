"""The promotion gates' section of the evaluation report, added to the report the evaluate job wrote.

The evaluate job renders the report once: its plots need matplotlib, numpy and pandas, which a
Lambda package never carries. The gates step (the pipeline-tasks Lambda in AWS, the local runner's
process here) only adds this section, built from the standard library, right after the test
metrics. So both runtimes produce the same final report from the same inputs, and neither renders
the plots twice.
"""

from __future__ import annotations

import html
from typing import Final

from shared.promotion import GateDecision

BEGIN: Final = "<!-- promotion gates -->"
END: Final = "<!-- /promotion gates -->"
_METRICS_TABLE: Final = '<table id="metrics-table">'
_TABLE_END: Final = "</table>"


def gates_section(decision: GateDecision) -> str:
    """The verdict and one row a gate (``#gates``, ``#gates-table``), between comment markers."""
    if decision.passed:
        verdict = "passed: the challenger may replace the champion"
    else:
        verdict = "FAILED: the run stops here and the champion stays"
    cells = ((gate.gate, "pass" if gate.passed else "FAIL", gate.reason) for gate in decision.gates)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(text)}</td>" for text in row) + "</tr>" for row in cells
    )
    return (
        f'{BEGIN}<h2 id="gates">Promotion gates: {verdict}</h2><table id="gates-table"><thead><tr>'
        f"<th>gate</th><th>result</th><th>reason</th></tr></thead><tbody>{body}</tbody></table>"
        f"{_checks_table(decision)}{END}"
    )


_SOURCES: Final = {"default": "default", "spec": "the spec's gates", "run": "this run (--gate)"}


def _checks_table(decision: GateDecision) -> str:
    """Each figure a gate judged, the value reached beside its floor or ceiling and who set it."""
    rows = []
    for gate in decision.gates:
        for check in gate.checks:
            value = "n/a" if check.value is None else f"{check.value:.4f}"
            bound = f"{'at least' if check.kind == 'floor' else 'at most'} {check.bound:.4f}"
            cells = (
                gate.gate,
                check.name,
                value,
                bound,
                _SOURCES[check.source],
                "pass" if check.passed else "FAIL",
            )
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    if not rows:
        return ""
    return (
        '<table id="gate-checks-table"><thead><tr><th>gate</th><th>figure</th><th>value reached</th>'
        "<th>floor or ceiling</th><th>set by</th><th>result</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def with_gates(report: str, decision: GateDecision) -> str:
    """``report`` with the gates' section after its metrics table (or at the end of its body);
    a section added before (the step ran again) is replaced, never repeated."""
    section = gates_section(decision)
    begin = report.find(BEGIN)
    end = report.find(END, begin)
    if begin >= 0 and end >= 0:
        return report[:begin] + section + report[end + len(END) :]
    metrics = report.find(_METRICS_TABLE)
    close = report.find(_TABLE_END, metrics) if metrics >= 0 else -1
    if close >= 0:
        at = close + len(_TABLE_END)
    else:
        at = report.rfind("</body>")
        at = at if at >= 0 else len(report)
    return report[:at] + section + report[at:]
