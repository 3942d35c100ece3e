"""The evaluation report opens in a real browser: headless Chromium renders the plots and the tables.

The screenshot is kept in ``test-output/`` for a person to look at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.e2e.browser import SCREENSHOT_DIR, chromium

if TYPE_CHECKING:
    from local.pipeline_runner import PipelineRun

SCREENSHOT = SCREENSHOT_DIR / "evaluation-report.png"
PLOTS = ("plot-roc", "plot-pr", "plot-reliability", "plot-importance")
TABLES = (
    "metrics-table",
    "gates-table",
    "threshold-table",
    "fairness-table",
    "group-table",
    "feature-screen-table",
)


def test_the_report_renders_its_plots_and_fairness_table_in_chromium(trained_run: PipelineRun) -> None:
    from playwright.sync_api import sync_playwright

    report = trained_run.run_dir / "report.html"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            failed_requests: list[str] = []
            page.on("requestfailed", lambda request: failed_requests.append(request.url))
            page.goto(report.as_uri())
            assert page.title().startswith("Evaluation ")
            for plot in PLOTS:
                width = page.eval_on_selector(f"#{plot} img", "img => img.complete ? img.naturalWidth : 0")
                assert width > 100, f"{plot} did not render"
            for table in TABLES:
                assert page.locator(f"#{table} tbody tr").count() > 0, f"{table} is empty"
            fairness = page.locator("#fairness-table").inner_text()
            assert "gender" in fairness and "location" in fairness and "customer_age_band" in fairness
            assert "passed" in page.locator("#gates").inner_text()
            assert not failed_requests, f"the report fetched something: {failed_requests}"  # self-contained
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 50_000
    print(f"screenshot: {SCREENSHOT}")
