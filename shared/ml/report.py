"""The evaluation report as one self-contained HTML page: plots inlined as PNG, no external assets."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to memory
import matplotlib.pyplot as plt

from shared.promotion import QUALITY_METRICS

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2933}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d9e2ec;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #d9e2ec;padding:.3rem .6rem;text-align:right}
th{background:#f0f4f8}td:first-child,th:first-child{text-align:left}.pass{color:#0b7a3e;font-weight:600}
.fail{color:#b42318;font-weight:600}.note{color:#52606d;font-size:.9rem}.plots{display:flex;flex-wrap:wrap;gap:1rem}
figure{margin:0}figcaption{font-size:.85rem;color:#52606d;text-align:center}
"""


def _replay_section(replayed: dict[str, Any] | None) -> list[str]:
    """Live traffic through the champion and the challenger (shared/ml/replay.py)."""
    if not replayed:
        return []
    heading = '<h2 id="replay">Replay of live traffic</h2>'
    if "skipped" in replayed:
        return [heading, f"<p>No replay: {html.escape(str(replayed['skipped']))}.</p>"]
    window = replayed["window"]
    if not replayed["claims"]:
        return [heading, f"<p>No captured claims in the last {window['days']} days to replay.</p>"]
    cost = replayed["expected_cost_change"]
    agreement = replayed.get("served_agreement")
    fidelity = (
        f" Replayed, the champion gives the decision it served for {agreement:.1%} of its claims (the "
        "capture keeps claims without their personal fields)."
        if agreement is not None
        else ""
    )
    rows = [
        [
            f["claim_id"],
            f["champion_score"],
            f["champion_decision"],
            f["challenger_score"],
            f["challenger_decision"],
        ]
        for f in replayed["top_flips"]
    ]
    return [
        heading,
        f"<p>The {replayed['claims']:,} claims captured from {html.escape(window['start'][:16])} to "
        f"{html.escape(window['end'][:16])} UTC, through the champion "
        f"{html.escape(replayed['champion'])} and this challenger: <b>{replayed['flips']:,} would change "
        f"decision ({replayed['flip_rate']:.2%})</b>, {replayed['approve_to_review']:,} from auto-approve "
        f"to review and {replayed['review_to_approve']:,} from review to auto-approve.{fidelity}</p>",
        "<p>Expected cost of the change (positive: dearer), at the run's costs (missed high-risk claim "
        f"{cost['costs']['missed_high_risk']:g}, needless review {cost['costs']['needless_review']:g}): "
        f"{cost['by_challenger']:+,.2f} by the challenger's probabilities, {cost['by_champion']:+,.2f} by "
        f"the champion's ({cost['by_challenger_per_1000_claims']:+,.2f} and "
        f"{cost['by_champion_per_1000_claims']:+,.2f} per 1,000 claims).</p>",
        "<p>The claims whose score moved most among those that flip:</p>",
        _table(
            ["claim", "champion score", "champion decision", "challenger score", "challenger decision"],
            rows,
            "replay-flips",
        ),
    ]


# The scale-free figures the gates' default floors use (shared/gates.py).
LIFTS = ("pr_auc_lift", "recall_lift")
OUT_OF_TIME_METRICS = (
    "rows",
    "prevalence",
    "roc_auc",
    "pr_auc",
    "pr_auc_lift",
    "recall",
    "recall_lift",
    "precision",
    "f1",
    "brier",
    "expected_cost",
)


def out_of_time_html(oot: dict[str, Any] | None, test: dict[str, Any]) -> list[str]:
    """In-time and out-of-time figures of one refit side by side, or why the check did not run."""
    if not oot:
        return []
    heading = '<h2 id="out-of-time">Out-of-time check</h2>'
    if "skipped" in oot:
        column = f" on {html.escape(oot['date_column'])}" if oot.get("date_column") else ""
        return [heading, f'<p id="out-of-time-skipped">Not run{column}: {html.escape(oot["skipped"])}.</p>']
    in_time, later = oot.get("in_time_metrics", {}), oot["metrics"]
    rows = [
        [m, in_time.get(m, float("nan")), later.get(m, float("nan"))]
        for m in OUT_OF_TIME_METRICS
        if m in later
    ]
    return [
        heading,
        f"<p>Refitted on {oot['train_rows']:,} claims up to {html.escape(oot['cutoff'])} "
        f"({html.escape(oot['date_column'])}, {oot.get('periods', '?')} periods), then measured on "
        f"{oot.get('in_time_rows', 0):,} held-out claims of the same period (in time) and on the "
        f"{oot['test_rows']:,} claims from {html.escape(str(oot.get('later_from', '')))} on (out of "
        f"time). The served model's random-split test ROC-AUC is {test['roc_auc']:.4f}.</p>",
        f'<p class="note">Cutoff rule: {html.escape(oot.get("rule", "0.8 quantile"))}.</p>',
        _table(["metric", "in time", "out of time"], rows, "out-of-time-table"),
    ]


def tuning_html(tuning: dict[str, Any] | None) -> list[str]:
    """How the search kept to its budget: trials run against asked, time spent against the budget."""
    budget = (tuning or {}).get("budget")
    if not budget:
        return []
    heading = '<h2 id="tuning">Hyperparameter search</h2>'
    if not budget["trials_asked"]:
        return [
            heading,
            "<p>No search was asked for (0 trials): XGBoost with its default hyperparameters.</p>",
        ]
    over = "" if budget["within_budget"] else " <b>(over the budget)</b>"
    families = ", ".join(f"{f} {v:.4f}" for f, v in sorted((tuning or {}).get("best_per_family", {}).items()))
    rows = [
        ["trials asked", budget["trials_asked"]],
        ["trials run", budget["trials_run"]],
        ["completed", budget["trials_completed"]],
        ["stopped at the budget", budget["trials_stopped"]],
        ["failed", budget["trials_failed"]],
        ["not run", budget["trials_not_run"]],
        ["seconds spent", f"{budget['elapsed_s']:.1f}"],
        ["budget (seconds)", f"{budget['budget_s']:g}"],
    ]
    return [
        heading,
        f"<p><b>{budget['trials_run']} of {budget['trials_asked']} trials run</b> in "
        f"{budget['elapsed_s']:.1f}s of the {budget['budget_s']:g}s budget{over}; the search ended: "
        f"{html.escape(budget['ended_by'])}. Best cross-validated PR-AUC per family: "
        f"{html.escape(families or 'none completed')}.</p>",
        _table(["", "value"], rows, "tuning-table"),
    ]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def _interval(bounds: list[float] | None) -> str:
    if not bounds or any(math.isnan(b) for b in bounds):
        return "n/a"
    return f"{bounds[0]:.3f} to {bounds[1]:.3f}"


def _table(headers: list[str], rows: list[list[Any]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _png(figure: Any, caption: str, plot_id: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure id="{plot_id}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _curve_plots(ev: dict[str, Any]) -> str:
    roc, pr, rel = ev["curves"]["roc"], ev["curves"]["pr"], ev["reliability"]
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.plot(roc["fpr"], roc["tpr"], label=f"ROC-AUC {ev['test']['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    parts = [_png(fig, "ROC curve on the test set", "plot-roc")]
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.plot(pr["recall"], pr["precision"], label=f"PR-AUC {ev['test']['pr_auc']:.3f}")
    ax.axhline(ev["test"]["prevalence"], linestyle=":", color="grey")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    ax.legend(loc="upper right")
    parts.append(_png(fig, "Precision-recall curve on the test set", "plot-pr"))
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.plot([b["mean_score"] for b in rel["bins"]], [b["observed_rate"] for b in rel["bins"]], marker="o")
    ax.set(
        xlabel="mean risk score",
        ylabel="observed high-risk share",
        title=f"Reliability (Brier {rel['brier']:.4f})",
    )
    parts.append(_png(fig, "Reliability of the calibrated scores", "plot-reliability"))
    importance = ev["global_importance"][:15]
    fig, ax = plt.subplots(figsize=(5, 0.3 * len(importance) + 1))
    ax.barh([i["factor"] for i in importance][::-1], [i["mean_abs_contribution"] for i in importance][::-1])
    ax.set(xlabel="mean |contribution| to log-odds", title="Global importance")
    parts.append(_png(fig, "Global feature importance (mean absolute contribution)", "plot-importance"))
    return '<div class="plots">' + "".join(parts) + "</div>"


def render_report(ev: dict[str, Any]) -> str:
    model = ev["model"]
    test = ev["test"]
    cm = test["confusion_matrix"]
    min_group = next(iter(ev["fairness"].values()))["min_group_size"] if ev["fairness"] else 30
    sections = [
        f"<h1>Evaluation of model {html.escape(model['version'])}</h1>",
        '<p class="note">'
        f"Family <b>{html.escape(model['family'])}</b> · spec {html.escape(model['spec'])} · "
        f"data sha256 {html.escape(model['data_sha256'][:16])}… · "
        f"code {html.escape(model['code_version'])} · "
        f"explanations: {html.escape(model['explanation_method'])}</p>",
        "<h2>Test metrics</h2>",
        _table(
            ["metric", "value"],
            [[k, test[k]] for k in ("rows", "prevalence", *QUALITY_METRICS, *LIFTS) if k in test],
            "metrics-table",
        ),
    ]
    # The promotion gates' section is added by the gates step (shared/gate_report.py).
    if ev.get("oracle_roc_auc") is not None:
        gap = ev["oracle_roc_auc"] - test["roc_auc"]
        sections.append(
            f"<p>Oracle ROC-AUC (from the generator's true probabilities) "
            f"<b>{ev['oracle_roc_auc']:.4f}</b>; model <b>{test['roc_auc']:.4f}</b>; gap {gap:.4f}.</p>"
        )
    tc = ev["threshold_comparison"]
    sections += [
        "<h2>Decision threshold chosen by cost</h2>",
        f'<p class="note">A missed high-risk claim costs {ev["costs"]["missed_high_risk"]:g}, '
        f"a needless review {ev['costs']['needless_review']:g}. "
        "The threshold minimises the expected cost on the validation set.</p>",
        _table(
            ["threshold", "value", "expected cost / claim", "auto-approved", "precision", "recall", "F1"],
            [
                [
                    "cost-chosen",
                    tc["chosen"]["threshold"],
                    tc["chosen"]["expected_cost"],
                    tc["chosen"]["auto_approved_share"],
                    tc["chosen"]["precision"],
                    tc["chosen"]["recall"],
                    tc["chosen"]["f1"],
                ],
                [
                    "0.5",
                    tc["half"]["threshold"],
                    tc["half"]["expected_cost"],
                    tc["half"]["auto_approved_share"],
                    tc["half"]["precision"],
                    tc["half"]["recall"],
                    tc["half"]["f1"],
                ],
            ],
            "threshold-table",
        ),
        "<h2>Confusion matrix (cost-chosen threshold)</h2>",
        _table(
            ["", "predicted low", "predicted high"],
            [["actual low", cm["tn"], cm["fp"]], ["actual high", cm["fn"], cm["tp"]]],
            "confusion-table",
        ),
        "<h2>Curves, calibration and importance</h2>",
        _curve_plots(ev),
        "<h2>Fairness across protected groups</h2>",
        '<p class="note">Protected attributes are never model inputs. Selection rate is the share sent to '
        f"manual review; disparity is judged over groups with at least {min_group} claims. The bounds "
        "allowing for chance come from each group's Wilson score interval, adjusted (Bonferroni) so an "
        "attribute's groups are covered together at 95%: a small group with no claim flagged still has "
        "an interval, so it cannot fail the gate on its own.</p>",
        _table(
            [
                "attribute",
                "selection-rate ratio (min/max)",
                "selection-rate difference",
                "FNR difference",
                "FNR difference beyond chance (95% lower bound)",
                "selection-rate ratio allowing for chance (95% upper bound)",
            ],
            [
                [
                    attr,
                    f["selection_rate_ratio"],
                    f["selection_rate_difference"],
                    f["false_negative_rate_difference"],
                    f.get("false_negative_rate_difference_lower_95", float("nan")),
                    f.get("selection_rate_ratio_upper_95", float("nan")),
                ]
                for attr, f in ev["fairness"].items()
            ],
            "fairness-table",
        ),
        "<h2>Per-group metrics</h2>",
        _table(
            [
                "attribute",
                "group",
                "claims",
                "prevalence",
                "selection rate",
                "selection rate interval",
                "FNR",
                "FNR interval",
                "ROC-AUC",
            ],
            [
                [
                    attr,
                    g["group"],
                    g["count"],
                    g["prevalence"],
                    g["selection_rate"],
                    _interval(g.get("selection_rate_interval")),
                    g["false_negative_rate"],
                    _interval(g.get("false_negative_rate_interval")),
                    g["roc_auc"],
                ]
                for attr, f in ev["fairness"].items()
                for g in f["groups"]
            ],
            "group-table",
        ),
    ]
    if ev.get("cross_validation"):
        cv = ev["cross_validation"]
        sections += [
            f"<h2>Stratified {cv['folds']}-fold cross-validation ({cv['rows']:,} rows)</h2>",
            _table(
                ["metric", "mean", "std"],
                [
                    [k, cv[k]["mean"], cv[k]["std"]]
                    for k in ("roc_auc", "pr_auc", "f1", "precision", "recall", "brier")
                ],
                "cv-table",
            ),
        ]
    screen = ev.get("feature_screen")
    if screen:
        attributes = list(screen["factors"][0]["proxy_strength"]) if screen["factors"] else []
        proxies = ", ".join(f"{p['factor']} → {p['attribute']}" for p in screen["proxies"]) or "none"
        sections += [
            "<h2>Feature screen</h2>",
            f"<p>Protected attributes ({html.escape(', '.join(screen['protected_attributes']))}) are not "
            f"model inputs. Proxy bound {screen['proxy_strength_bound']}: {html.escape(proxies)}. "
            f"Leakage bound: univariate ROC-AUC {screen['leakage_auc_bound']}.</p>",
            _table(
                ["factor", "univariate ROC-AUC", "missing share"] + [f"proxy of {a}" for a in attributes],
                [
                    [f["factor"], f["univariate_auc"], f["missing_share"]]
                    + [f["proxy_strength"][a] for a in attributes]
                    for f in screen["factors"]
                ],
                "feature-screen-table",
            ),
        ]
    sections += out_of_time_html(ev.get("out_of_time"), test)
    sections += tuning_html(ev.get("tuning"))
    sections += _replay_section(ev.get("replay"))
    title = f"Evaluation {html.escape(model['version'])}"
    head = f'<head><meta charset="utf-8"><title>{title}</title><style>{_STYLE}</style></head>'
    return f'<!DOCTYPE html><html lang="en">{head}<body>{"".join(sections)}</body></html>'
