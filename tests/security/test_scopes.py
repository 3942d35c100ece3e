"""A credential's scopes are the same whichever header carries it: every scope subset, in every
credential form, on every scoped route, through the local API and through the handler alone (as
API Gateway invokes it in AWS)."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from lambdas.api import handler
from local.api_gateway import create_local_api
from local.auth import Credential, LocalAuthorizer
from shared import auth
from tests.factories import minimal_claim
from tests.unit.test_api_handler import EVENT, MANIFEST, Context, FakeCatalog, FakeEndpoint, FakeStarter

SUBSETS = [
    frozenset(c) for n in range(len(auth.ALL_SCOPES) + 1) for c in itertools.combinations(auth.ALL_SCOPES, n)
]
TOKENS = {f"token-{i}": scopes for i, scopes in enumerate(SUBSETS)}
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/predict"): minimal_claim(),
    ("POST", "/api/v1/predict/batch"): {"claims": [minimal_claim()]},
    ("GET", "/api/v1/models/current"): None,
    ("POST", "/api/v1/models/retrain"): {},
}
FORMS: dict[str, Callable[[str], dict[str, str]]] = {
    "bearer": lambda token: {"Authorization": f"Bearer {token}"},
    "bearer, lower case": lambda token: {"authorization": f"bearer {token}"},
    "x-api-key": lambda token: {"x-api-key": token},
    "both headers": lambda token: {"Authorization": f"Bearer {token}", "x-api-key": token},
}


@pytest.fixture(scope="module")
def local_api() -> Iterator[tuple[TestClient, FakeEndpoint, FakeStarter]]:
    endpoint, starter = FakeEndpoint(), FakeStarter()
    handler.use_ports(endpoint=endpoint, catalog=FakeCatalog(MANIFEST), starter=starter)
    credentials = {token: Credential(f"client-{token}", scopes) for token, scopes in TOKENS.items()}
    app = create_local_api(
        handler.lambda_handler, authorizer=LocalAuthorizer(credentials, requests_per_minute=0)
    )
    with TestClient(app) as client:
        yield client, endpoint, starter
    handler.use_ports()


def test_the_routes_under_test_are_every_scoped_route() -> None:
    assert set(BODIES) == set(auth.ROUTE_SCOPES)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("route", sorted(BODIES))
def test_every_credential_form_gets_exactly_its_scopes(
    local_api: tuple[TestClient, FakeEndpoint, FakeStarter], route: tuple[str, str], form: str
) -> None:
    client, endpoint, starter = local_api
    method, path = route
    for token, scopes in TOKENS.items():
        sent_before, started_before = len(endpoint.sent), len(starter.started)
        body = BODIES[route]
        response = client.request(
            method, path, headers=FORMS[form](token), json=body if body is not None else None
        )
        if auth.ROUTE_SCOPES[route] in scopes:
            assert response.status_code in (200, 202), (token, sorted(scopes), response.text)
        else:
            assert response.status_code == 403, (token, sorted(scopes), response.text)
            assert response.json()["error"]["code"] == "forbidden"
            assert (len(endpoint.sent), len(starter.started)) == (sent_before, started_before), "nothing ran"


@pytest.mark.parametrize("route", sorted(BODIES))
def test_unknown_or_mixed_credentials_never_fall_back_to_another_header(
    local_api: tuple[TestClient, FakeEndpoint, FakeStarter], route: tuple[str, str]
) -> None:
    client, _, _ = local_api
    method, path = route
    everything = next(t for t, s in TOKENS.items() if s == frozenset(auth.ALL_SCOPES))
    for headers in (
        {},
        {"Authorization": "Bearer wrong", "x-api-key": everything},  # a bad bearer is not rescued by a key
        {"Authorization": everything},  # no "Bearer " prefix
        {"Authorization": "Basic " + everything},
        {"x-api-key": ""},
        {"x-api-key": everything + "x"},
    ):
        assert client.request(method, path, headers=headers).status_code == 401, headers


@pytest.mark.parametrize("route", sorted(BODIES))
def test_the_handler_alone_refuses_a_request_without_the_scope(route: tuple[str, str]) -> None:
    """Behind API Gateway: no claims (an API key alone, a route left without its authorizer), an empty
    scope or another scope is 403 before anything runs."""
    method, path = route
    endpoint, starter = FakeEndpoint(), FakeStarter()
    handler.use_ports(endpoint=endpoint, catalog=FakeCatalog(MANIFEST), starter=starter)
    try:
        for claims in (None, {}, {"sub": "x", "scope": ""}, {"sub": "x", "scope": "claims-risk/other"}):
            event = copy.deepcopy(EVENT)
            body = BODIES[route]
            event.update(
                httpMethod=method,
                path=path,
                body=json.dumps(body) if body is not None else None,
                pathParameters={"proxy": path.lstrip("/")},
            )
            event["requestContext"].update(httpMethod=method, path=f"/prod{path}")
            event["requestContext"]["identity"]["apiKeyId"] = "claims-system-key"
            if claims is not None:
                event["requestContext"]["authorizer"] = {"claims": claims}
            response = handler.lambda_handler(event, Context())
            assert response["statusCode"] == 403, (claims, response["body"])
        assert endpoint.sent == [] and starter.started == []
    finally:
        handler.use_ports()
