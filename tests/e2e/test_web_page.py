"""The claims handler's web page in headless Chromium: score a claim and a CSV file, see the model card;
and, as in AWS, sign in with the hosted login (authorization code with PKCE) against a fake one."""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit

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


# ---- Signing in as in AWS: the page, its config.json and the API on one server, a fake hosted login on
# another, both on 127.0.0.1 and both stopped by the test.

WEB_PAGE = Path(__file__).resolve().parents[2] / "local" / "web" / "index.html"
CLIENT_ID = "people-client-under-test"
ACCESS_TOKEN = "access-token-from-the-fake-login"
SCOPES = ["openid", "email", "claims-risk/predict", "claims-risk/models.read", "claims-risk/retrain"]
VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")  # RFC 7636, section 4.1
CARD = {
    "model_version": "fake-1",
    "family": "xgboost",
    "created_at": "2024-01-01T00:00:00Z",
    "threshold": 0.5,
    "costs": {"missed_high_risk": 10, "needless_review": 1},
    "metrics": {"test": {"roc_auc": 0.9}},
    "explanation_method": "exact TreeSHAP",
    "lineage": {"data_sha256": "0" * 64, "code_version": "test"},
}


def s256(verifier: str) -> str:
    """PKCE's S256: BASE64URL(SHA256(ASCII(code_verifier))), without padding (RFC 7636, 4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).decode().rstrip("=")


@dataclass
class Seen:
    """What the fake servers were asked."""

    config: dict[str, Any] = field(default_factory=dict)
    authorize: list[dict[str, str]] = field(default_factory=list)
    codes: dict[str, dict[str, str]] = field(default_factory=dict)  # code -> its authorize request
    token_calls: list[dict[str, str]] = field(default_factory=list)
    token_problems: list[str] = field(default_factory=list)
    api_authorization: list[str] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    seen: Seen


class _Handler(BaseHTTPRequestHandler):
    @property
    def seen(self) -> Seen:
        return cast(_Server, self.server).seen

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {
            "Content-Type": kind,
            "Content-Length": str(len(body)),
            **(headers or {}),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.reply(status, json.dumps(payload).encode(), "application/json", headers)


class FakeHostedLogin(_Handler):
    """Cognito's /oauth2/authorize (signs the user in at once) and /oauth2/token (checks PKCE S256)."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        self.seen.authorize.append(query)
        if url.path != "/oauth2/authorize" or query.get("code_challenge_method") != "S256":
            self.json(400, {"error": "invalid_request"})
            return
        code = secrets.token_urlsafe(16)
        self.seen.codes[code] = query
        target = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        self.seen.token_calls.append(form)
        asked = self.seen.codes.pop(form.get("code", ""), None)  # a code is redeemed once
        verifier = form.get("code_verifier", "")
        checks = {
            "path": self.path == "/oauth2/token",
            "form-encoded": self.headers["Content-Type"] == "application/x-www-form-urlencoded",
            "grant": form.get("grant_type") == "authorization_code",
            "known code": asked is not None,
            "same client": asked is not None and form.get("client_id") == asked["client_id"] == CLIENT_ID,
            "same redirect": asked is not None and form.get("redirect_uri") == asked["redirect_uri"],
            "verifier shape": bool(VERIFIER.match(verifier)),
            "S256": asked is not None and s256(verifier) == asked["code_challenge"],
        }
        self.seen.token_problems += [name for name, ok in checks.items() if not ok]
        cors = {"Access-Control-Allow-Origin": "*"}  # as Cognito's token endpoint answers
        if not all(checks.values()):
            self.json(400, {"error": "invalid_grant"}, cors)
            return
        tokens = {"access_token": ACCESS_TOKEN, "id_token": "id", "token_type": "Bearer", "expires_in": 3600}
        self.json(200, tokens, cors)


class FakeWebPageAndApi(_Handler):
    """The page and its config.json as CloudFront serves them, and the one API route the page calls first."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in {"/", "/index.html"}:
            self.reply(200, WEB_PAGE.read_bytes(), "text/html; charset=utf-8")
        elif path == "/config.json":
            self.json(200, self.seen.config)
        elif path == "/api/v1/models/current":
            authorization = self.headers.get("Authorization", "")
            self.seen.api_authorization.append(authorization)
            if authorization == f"Bearer {ACCESS_TOKEN}":
                self.json(200, CARD)
            else:
                self.json(401, {"error": {"code": "unauthorized", "message": "Unauthorized", "details": []}})
        else:
            self.json(404, {"error": {"code": "not_found", "message": "Not Found", "details": []}})


@contextlib.contextmanager
def serving(handler: Callable[..., BaseHTTPRequestHandler], seen: Seen) -> Iterator[str]:
    server = _Server(("127.0.0.1", 0), handler)
    server.seen = seen
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_claims_handler_signs_in_with_the_hosted_login_and_pkce_then_calls_the_api_with_the_token() -> None:
    from playwright.sync_api import sync_playwright

    executable = chromium()  # skips when this machine has no Chromium
    seen = Seen()
    with serving(FakeHostedLogin, seen) as login, serving(FakeWebPageAndApi, seen) as site:
        page_url = f"{site}/"
        seen.config = {
            "api_base": "",
            "auth": {
                "authorize_url": f"{login}/oauth2/authorize",
                "token_url": f"{login}/oauth2/token",
                "client_id": CLIENT_ID,
                "redirect_uri": page_url,
                "scopes": SCOPES,
            },
        }
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.set_default_timeout(15_000)
                page.goto(page_url)
                page.wait_for_selector("#sign-in", state="visible")
                assert page.is_hidden("#token-field")  # nothing to paste in AWS
                page.click("#sign-in")
                page.wait_for_selector("#card-version")  # signed in, and the API answered the token
                assert page.inner_text("#card-version") == "fake-1"
                assert page.inner_text("#auth-status") == "Signed in" and page.is_hidden("#sign-in")
                assert page.url == page_url  # the code and state are gone from the address
                assert page.evaluate("sessionStorage.getItem('claims-risk-token')") == ACCESS_TOKEN

                # A return the page did not start (another state, no verifier here) is refused unredeemed.
                forged = browser.new_page()
                forged.set_default_timeout(15_000)
                forged.goto(f"{page_url}?code=intercepted&state=forged")
                forged.wait_for_function("document.getElementById('auth-status').textContent !== ''")
                assert "not started here" in forged.inner_text("#auth-status")
                assert forged.url == page_url and forged.is_visible("#sign-in")
            finally:
                browser.close()

    [asked] = seen.authorize
    assert asked["response_type"] == "code" and asked["client_id"] == CLIENT_ID
    assert asked["redirect_uri"] == page_url and asked["scope"].split() == SCOPES
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", asked["code_challenge"])  # base64url of 32 bytes, no padding
    assert asked["state"]
    [redeemed] = seen.token_calls  # once, by the real sign-in; the forged return never reached it
    assert seen.token_problems == []
    assert s256(redeemed["code_verifier"]) == asked["code_challenge"]
    assert f"Bearer {ACCESS_TOKEN}" in seen.api_authorization
    assert set(seen.api_authorization) == {f"Bearer {ACCESS_TOKEN}"}  # never called without the token
