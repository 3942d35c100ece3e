"""The local API's stand-in for API Gateway's authorizer and usage-plan throttling.

A client presents a credential as ``Authorization: Bearer <token>`` (as a Cognito access token would
come) or as ``x-api-key: <token>`` (as a usage-plan key would). Either way the credential is the same
and so are its scopes: they reach the handler as the authorizer's claims, which the handler checks
on every scoped route. (In AWS a scoped route needs the Cognito token whatever key comes with it, so
the claims are always there; a key alone never carries a scope.)
"""

from __future__ import annotations

import collections
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shared import auth

TOKEN_ENV = "CLAIMS_RISK_API_TOKEN"
EXTRA_TOKENS_ENV = "CLAIMS_RISK_API_TOKENS_FILE"  # JSON {token: {"principal": ..., "scopes": [...]}}
THROTTLE_ENV = "CLAIMS_RISK_THROTTLE_PER_MINUTE"
TOKEN_FILE = "api-token"
WINDOW_S = 60.0
SHARED_THROTTLE_ENV = "CLAIMS_RISK_SHARED_THROTTLE"  # set by `claims-risk up` for its API processes


@dataclass(frozen=True)
class Credential:
    principal: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Caller:
    principal: str
    scopes: frozenset[str]
    via_api_key: bool


class SharedWindow:
    """Each client's requests of the last minute in SQLite, so every API process (each a Lambda
    execution environment of its own) counts against one allowance, as API Gateway's usage plan does."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # a throttle window need not survive a power cut
        self._db.execute("CREATE TABLE IF NOT EXISTS hits (principal TEXT NOT NULL, at REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS hits_by_principal ON hits (principal, at)")
        self._lock = threading.Lock()

    def admit(self, principal: str, limit: int, now: float) -> float | None:
        """None admits (and counts) the request; otherwise seconds until the window has room."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                expired = now - WINDOW_S
                self._db.execute("DELETE FROM hits WHERE principal = ? AND at <= ?", (principal, expired))
                count, oldest = self._db.execute(
                    "SELECT COUNT(*), MIN(at) FROM hits WHERE principal = ?", (principal,)
                ).fetchone()
                if count >= limit:
                    return float(WINDOW_S - (now - oldest))
                self._db.execute("INSERT INTO hits (principal, at) VALUES (?, ?)", (principal, now))
                return None
            finally:
                self._db.execute("COMMIT")


class LocalAuthorizer:
    def __init__(
        self,
        credentials: Mapping[str, Credential],
        requests_per_minute: int = auth.DEFAULT_REQUESTS_PER_MINUTE,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedWindow | None = None,
    ) -> None:
        """``shared``: count across processes (then ``clock`` must be wall time, as they share it)."""
        self.credentials = dict(credentials)
        self.requests_per_minute = requests_per_minute
        self.clock = clock
        self.shared = shared
        self._recent: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def authenticate(self, headers: Mapping[str, str]) -> Caller | None:
        """The caller a request's headers prove, or None (no or unknown credential)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        bearer = lowered.get("authorization", "")
        if bearer[:7].lower() == "bearer ":
            credential = self._lookup(bearer[7:].strip())
            return Caller(credential.principal, credential.scopes, False) if credential else None
        key = lowered.get("x-api-key")
        if key:
            credential = self._lookup(key.strip())
            return Caller(credential.principal, credential.scopes, True) if credential else None
        return None

    def _lookup(self, presented: str) -> Credential | None:
        found = None
        for token, credential in self.credentials.items():  # compare every token in constant time
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = credential
        return found

    def retry_after(self, principal: str) -> float | None:
        """None admits the request; otherwise seconds until the client's window has room again."""
        if self.requests_per_minute <= 0:
            return None
        now = self.clock()
        if self.shared is not None:
            return self.shared.admit(principal, self.requests_per_minute, now)
        recent = self._recent[principal]
        while recent and now - recent[0] >= WINDOW_S:
            recent.popleft()
        if len(recent) >= self.requests_per_minute:
            return WINDOW_S - (now - recent[0])
        recent.append(now)
        return None


def local_token(home: Path) -> str:
    """``CLAIMS_RISK_API_TOKEN`` if set; otherwise the token stored in the data folder, made once."""
    given = os.environ.get(TOKEN_ENV)
    if given:
        return given
    path = home / TOKEN_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    home.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(token + "\n", encoding="utf-8")
    return token


def authorizer_from_env(home: Path) -> LocalAuthorizer:
    credentials = {local_token(home): Credential("local-user", frozenset(auth.ALL_SCOPES))}
    extra = os.environ.get(EXTRA_TOKENS_ENV)
    if extra:
        for token, entry in json.loads(Path(extra).read_text(encoding="utf-8")).items():
            credentials[token] = Credential(entry["principal"], frozenset(entry.get("scopes", [])))
    rate = int(os.environ.get(THROTTLE_ENV, auth.DEFAULT_REQUESTS_PER_MINUTE))
    if os.environ.get(SHARED_THROTTLE_ENV):  # several API processes: one allowance per client
        return LocalAuthorizer(credentials, rate, time.time, SharedWindow(home / "run" / "throttle.sqlite3"))
    return LocalAuthorizer(credentials, rate)
