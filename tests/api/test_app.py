"""The service router: authentication on every route, one error shape, health, metrics."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from dtaas.api.app import create_app
from tests.factories import bearer

# The only routes reachable without credentials.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("GET", "/api/docs"),
    ("GET", "/api/docs/oauth2-redirect"),
    ("GET", "/api/openapi.json"),
}
PUBLIC_MOUNTS = {"/static"}
FILLERS = {"token_id": "1", "username": "alice"}


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: FILLERS.get(m.group(1), "1"), path)


def _routes(app):
    """Every (method, path) the app serves, included routers flattened."""
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, Mount):
            continue
        for method in sorted(context.methods or []):
            if method != "HEAD":
                yield method, context.path


def test_every_route_needs_credentials_except_the_allow_list(client):
    checked = 0
    for method, path in _routes(client.app):
        if (method, path) in PUBLIC:
            continue
        response = client.request(method, _concrete(path), headers={"Accept": "application/json"})
        assert response.status_code == 401, f"{method} {path} answered {response.status_code}"
        assert response.json()["detail"][0]["type"] == "not_authenticated"
        checked += 1
    assert checked >= 15  # the enumeration really found the app's routes


def test_allow_list_names_only_existing_routes(client):
    routes = set(_routes(client.app))
    assert routes >= PUBLIC
    mounts = {route.path for route in client.app.routes if isinstance(route, Mount)}
    assert mounts == PUBLIC_MOUNTS


def test_every_api_route_documents_the_error_shape(client):
    schema = client.get("/api/openapi.json").json()
    api_routes = [(m, p) for m, p in _routes(client.app) if p.startswith("/api/v1")]
    assert api_routes
    for method, path in api_routes:
        responses = schema["paths"][path][method.lower()]["responses"]
        assert "401" in responses and "403" in responses, f"{method} {path}"


def test_web_page_without_session_shows_login_form_with_401(client):
    response = client.get("/account", headers={"Accept": "text/html"})
    assert response.status_code == 401
    assert 'id="login-form"' in response.text
    assert 'name="next" value="/account"' in response.text


def test_unknown_route_is_404_in_the_common_shape(client):
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "detail": [
            {
                "type": "not_found",
                "msg": "There is nothing at /api/v1/nothing-here; check the address.",
                "loc": [],
            }
        ]
    }


def test_wrong_method_is_405_in_the_common_shape(client):
    response = client.put("/healthz")
    assert response.status_code == 405
    assert response.json()["detail"][0]["type"] == "method_not_allowed"


def test_oversized_body_is_413(client):
    response = client.post(
        "/api/v1/auth/login",
        content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["detail"][0]["type"] == "payload_too_large"


def test_oversized_streamed_body_without_length_is_413(client):
    def chunks():
        for _ in range(40):
            yield b" " * 65536

    response = client.post(
        "/api/v1/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_healthz_checks_the_database(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz_reports_an_unreachable_database(settings):
    # Nothing listens on port 1 of the loopback: the connection is refused at once.
    unreachable = settings.model_copy(
        update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/test"}
    )
    with TestClient(create_app(unreachable)) as down:
        response = down.get("/healthz")
    assert response.status_code == 503
    assert response.json()["detail"][0]["type"] == "backend_unavailable"


def test_metrics_need_an_admin_and_count_requests(client, session, settings, admin, alice):
    assert client.get("/metrics", headers=bearer(session, settings, alice)).status_code == 403
    client.get("/healthz")
    response = client.get("/metrics", headers=bearer(session, settings, admin))
    assert response.status_code == 200
    assert 'dtaas_http_requests_total{method="GET",route="/healthz",status="200"}' in response.text


def test_request_id_is_returned_and_logged(client, caplog):
    with caplog.at_level(logging.INFO, logger="dtaas.access"):
        response = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    lines = [r for r in caplog.records if r.name == "dtaas.access"]
    assert lines
    assert lines[-1].request_id == "abc-123"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "<script>"])
def test_unsafe_request_ids_are_replaced(client, bad):
    response = client.get("/healthz", headers={"X-Request-ID": bad})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


def test_unexpected_error_is_500_with_request_id(client, session, settings, admin):
    @client.app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    client_no_raise = type(client)(client.app, raise_server_exceptions=False)
    response = client_no_raise.get("/api/v1/boom", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500
    body = response.json()
    assert body["detail"][0]["type"] == "internal_error"
    assert "req-42" in body["detail"][0]["msg"]
    assert "secret internals" not in response.text
