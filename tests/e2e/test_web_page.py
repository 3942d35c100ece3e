"""The claims handler's web page in headless Chromium: score a claim and a CSV file, see the model card."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from local.pipeline_runner import LocalModelStore
from local.servers import free_port, start_api_server, start_model_server, stop, wait_until_ready
from tests.e2e.browser import SCREENSHOT_DIR, chromium

if TYPE_CHECKING:
    import subprocess

    from local.pipeline_runner import PipelineRun

pytestmark = pytest.mark.slow
TOKEN = "web-page-test-token"


@pytest.fixture(scope="module")
def api(trained_run: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("web-home")
    model_dir = Path(LocalModelStore(home / "models").deploy(trained_run.model_tarball))
    saved = {k: os.environ.get(k) for k in ("CLAIMS_RISK_HOME", "CLAIMS_RISK_API_TOKEN")}
    os.environ.update(CLAIMS_RISK_HOME=str(home), CLAIMS_RISK_API_TOKEN=TOKEN)
    children: list[subprocess.Popen[bytes]] = []
    try:
        model_port, api_port = free_port(), free_port()
        children.append(
            start_model_server(
                model_dir, "127.0.0.1", model_port, home / "model.log", {"CLAIMS_RISK_HOME": str(home)}
            )
        )
        wait_until_ready(f"http://127.0.0.1:{model_port}/ping", children[-1])
        children.append(
            start_api_server(f"http://127.0.0.1:{model_port}", "127.0.0.1", api_port, home / "api.log")
        )
        wait_until_ready(f"http://127.0.0.1:{api_port}/health", children[-1])
        yield f"http://127.0.0.1:{api_port}"
    finally:
        for child in reversed(children):
            stop(child)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def claims_csv(contract: dict[str, Any]) -> str:
    rows = [*contract["predict"]["requests"], *contract["predict_batch"]["requests"][0]["claims"]]
    rows.append({**rows[0], "claim_id": "BAD-1", "claim_amount": -10})  # a business-rule breach
    fields = sorted({k for row in rows for k in row})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_a_claims_handler_scores_a_claim_and_a_file_and_sees_the_model_card(
    api: str, contract: dict[str, Any], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    upload = tmp_path / "claims.csv"
    upload.write_text(claims_csv(contract), encoding="utf-8")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.goto(f"{api}/ui/#token={TOKEN}")
            assert "token" not in page.url  # taken from the fragment, then dropped from the address

            page.fill("#claim", json.dumps(contract["predict"]["requests"][1]))
            page.click("#score")
            page.wait_for_selector("#risk-level")
            level = page.inner_text("#risk-level")
            assert level in {"LOW RISK", "HIGH RISK"}
            factors = page.locator("#risk-factors .bar")
            assert factors.count() >= 3
            assert all(
                name.islower() for name in factors.evaluate_all("bars => bars.map(b => b.dataset.factor)")
            )

            page.wait_for_selector("#card-version")
            assert page.inner_text("#card-family") == "xgboost"

            page.set_input_files("#csv", str(upload))
            page.click("#score-file")
            page.wait_for_selector("#batch-summary")
            summary = page.inner_text("#batch-summary")
            assert summary.startswith("4 scored") and "1 rejected" in summary
            with page.expect_download() as download_info:
                page.click("#download")
            scored = download_info.value.path().read_text(encoding="utf-8")

            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT_DIR / "web-page.png"), full_page=True)
        finally:
            browser.close()
    rows = list(csv.DictReader(io.StringIO(scored)))
    assert [r["claim_id"] for r in rows] == [
        "TEST-001",
        "CLM-2024-001",
        "CLM-2024-002",
        "CLM-2024-003",
        "BAD-1",
    ]
    assert all(r["risk_level"] in {"low", "high"} and r["top_risk_factors"] for r in rows[:4])
    assert rows[4]["risk_level"] == "" and "claim_amount" in rows[4]["error"]
