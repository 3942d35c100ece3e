"""Who may call what: the API's scopes, which route needs which, and the default throttle.

One definition for the three places that enforce it: the CDK stack (Cognito scopes on API Gateway
methods, usage plans), the local API gateway (a local credential), and the handler (a second check
of the scope, so a route never runs with a token that lacks it).
"""

from __future__ import annotations

from typing import Final

SCOPE_PREFIX: Final = "claims-risk"
PREDICT: Final = f"{SCOPE_PREFIX}/predict"
READ_MODELS: Final = f"{SCOPE_PREFIX}/models.read"
RETRAIN: Final = f"{SCOPE_PREFIX}/retrain"
ALL_SCOPES: Final = (PREDICT, READ_MODELS, RETRAIN)

# (method, resource path) → the scope it needs. Routes not listed here are public.
ROUTE_SCOPES: Final[dict[tuple[str, str], str]] = {
    ("POST", "/api/v1/predict"): PREDICT,
    ("POST", "/api/v1/predict/batch"): PREDICT,
    ("GET", "/api/v1/models/current"): READ_MODELS,
    ("POST", "/api/v1/models/retrain"): RETRAIN,
}
# Routes that need a user's token with the scope: an API key alone (machine clients) is not enough.
USER_TOKEN_ONLY: Final = frozenset({("POST", "/api/v1/models/retrain")})

# The brief: 100 requests a minute per client.
DEFAULT_REQUESTS_PER_MINUTE: Final = 100


def required_scope(method: str, path: str) -> str | None:
    return ROUTE_SCOPES.get((method.upper(), path.rstrip("/") or "/"))


def granted_scopes(scope_claim: str | None) -> frozenset[str]:
    """OAuth's ``scope`` claim is one space-separated string."""
    return frozenset((scope_claim or "").split())
