"""The security API over HTTP: sign-in, sessions, CSRF, tokens, users, rate limits."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dtaas.security import service as security
from tests.factories import PASSWORD, bearer


def login(client: TestClient, username: str, password: str = PASSWORD):
    return client.post("/api/v1/auth/login", json={"username": username, "password": password})


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"detail"}
    assert set(body["detail"][0]) == {"type", "msg", "loc"}
    return body["detail"][0]


def test_login_sets_httponly_samesite_session_cookie(client, alice):
    response = login(client, "alice")
    assert response.status_code == 200
    assert response.json()["user"]["username"] == "alice"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("dtaas_session=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert client.get("/api/v1/me").json()["user"]["username"] == "alice"


def test_wrong_password_is_401_with_message(client, alice):
    response = login(client, "alice", "wrong password!")
    assert response.status_code == 401
    error = error_of(response)
    assert error["type"] == "not_authenticated"
    assert error["msg"] == "Wrong username or password."
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_unknown_user_gets_the_same_message_as_wrong_password(client):
    response = login(client, "nobody")
    assert response.status_code == 401
    assert error_of(response)["msg"] == "Wrong username or password."


def test_sixth_failed_login_in_a_minute_is_429_with_retry_after(client, alice):
    for _ in range(5):
        assert login(client, "alice", "nope nope nope").status_code == 401
    response = login(client, "alice", "nope nope nope")
    assert response.status_code == 429
    assert error_of(response)["type"] == "too_many_requests"
    assert 1 <= int(response.headers["retry-after"]) <= 61
    # Locked even with the right password until the window passes.
    assert login(client, "alice").status_code == 429


def test_failures_of_one_account_do_not_lock_another(client, alice, viewer):
    for _ in range(6):
        login(client, "alice", "nope nope nope")
    assert login(client, "victor").status_code == 200


def test_cookie_post_without_csrf_token_is_403(client, alice):
    csrf = login(client, "alice").json()["csrf_token"]
    response = client.post("/api/v1/tokens", json={"name": "x"})
    assert response.status_code == 403
    assert error_of(response)["type"] == "csrf_failed"
    wrong = client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    ok = client.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201


def test_bearer_requests_need_no_csrf_token(client, session, settings, alice):
    response = client.post(
        "/api/v1/tokens", json={"name": "ci"}, headers=bearer(session, settings, alice)
    )
    assert response.status_code == 201


def test_logout_ends_the_session(client, alice):
    csrf = login(client, "alice").json()["csrf_token"]
    cookie = client.cookies["dtaas_session"]
    assert client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    client.cookies.clear()
    client.cookies.set("dtaas_session", cookie)  # replaying the old cookie must fail
    assert client.get("/api/v1/me").status_code == 401


def test_tampered_session_cookie_is_401(client, alice):
    login(client, "alice")
    tampered = client.cookies["dtaas_session"][:-2] + "xx"
    client.cookies.clear()
    client.cookies.set("dtaas_session", tampered)
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert "sign in again" in error_of(response)["msg"]


def test_token_created_used_and_revoked(client, alice):
    created = client.post(
        "/api/v1/auth/token",
        json={"username": "alice", "password": PASSWORD, "token_name": "laptop"},
    )
    assert created.status_code == 201
    token = created.json()["token"]
    assert token.startswith("dtaas_")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).json()["auth"] == "token"
    listed = client.get("/api/v1/tokens", headers=headers).json()
    assert [t["name"] for t in listed] == ["laptop"]
    assert "token" not in listed[0]  # the secret is never shown again
    revoked = client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=headers)
    assert revoked.status_code == 200
    after = client.get("/api/v1/me", headers=headers)
    assert after.status_code == 401
    assert error_of(after)["msg"] == "The API token was revoked; create a new one."


def test_malformed_authorization_header_is_401(client):
    response = client.get("/api/v1/me", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert response.status_code == 401
    assert "Bearer" in error_of(response)["msg"]


def test_revoking_someone_elses_token_is_404(client, session, settings, alice, viewer):
    other = security.create_token(
        session=session,
        settings=settings,
        actor=security.principal_from_token(
            session=session, token=bearer(session, settings, viewer)["Authorization"][7:]
        ),
        name="victor's",
    )
    response = client.delete(
        f"/api/v1/tokens/{other.record.id}", headers=bearer(session, settings, alice)
    )
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found"


def test_viewer_calling_admin_route_is_403(client, session, settings, viewer):
    response = client.get("/api/v1/users", headers=bearer(session, settings, viewer))
    assert response.status_code == 403
    error = error_of(response)
    assert error["type"] == "permission_denied"
    assert "viewer" in error["msg"]


def test_user_calling_admin_route_is_403(client, session, settings, alice):
    response = client.post(
        "/api/v1/users",
        json={"username": "mallory", "password": "x" * 12},
        headers=bearer(session, settings, alice),
    )
    assert response.status_code == 403


def test_admin_creates_lists_and_disables_users(client, session, settings, admin):
    headers = bearer(session, settings, admin)
    created = client.post(
        "/api/v1/users",
        json={"username": "carol", "password": "a long password", "role": "viewer"},
        headers=headers,
    )
    assert created.status_code == 201
    assert created.json()["role"] == "viewer"
    names = [u["username"] for u in client.get("/api/v1/users", headers=headers).json()]
    assert "carol" in names
    disabled = client.patch("/api/v1/users/carol", json={"is_active": False}, headers=headers)
    assert disabled.json()["is_active"] is False


def test_duplicate_username_is_409(client, session, settings, admin, alice):
    response = client.post(
        "/api/v1/users",
        json={"username": "alice", "password": "a long password"},
        headers=bearer(session, settings, admin),
    )
    assert response.status_code == 409
    assert error_of(response)["loc"] == ["username"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"username": "Bad Name", "password": "a long password"}, ["body", "username"]),
        ({"username": "ok-name", "password": "short"}, ["body", "password"]),
        ({"username": "ok-name", "password": "a long password", "role": "god"}, ["body", "role"]),
        ({"username": "ok-name", "password": "a long password", "extra": 1}, ["body", "extra"]),
    ],
)
def test_invalid_user_bodies_are_422_with_location(client, session, settings, admin, body, loc):
    response = client.post("/api/v1/users", json=body, headers=bearer(session, settings, admin))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


def test_reserved_username_is_refused(client, session, settings, admin):
    response = client.post(
        "/api/v1/users",
        json={"username": "common", "password": "a long password"},
        headers=bearer(session, settings, admin),
    )
    assert response.status_code == 422
    assert "reserved" in error_of(response)["msg"]


def test_validation_errors_never_echo_the_password(client, alice):
    response = client.post("/api/v1/auth/login", json={"username": "alice", "password": 12345})
    assert response.status_code == 422
    assert "12345" not in response.text


def test_disabled_users_sessions_and_tokens_stop_at_once(client, session, settings, admin, alice):
    token_headers = bearer(session, settings, alice)
    login(client, "alice")
    assert client.get("/api/v1/me").status_code == 200
    response = client.patch(
        "/api/v1/users/alice",
        json={"is_active": False},
        headers=bearer(session, settings, admin),
    )
    assert response.status_code == 200
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", headers=token_headers).status_code == 401
    relogin = login(client, "alice")
    assert relogin.status_code == 401
    assert "disabled" in error_of(relogin)["msg"]


def test_admin_cannot_disable_themselves(client, session, settings, admin):
    response = client.patch(
        f"/api/v1/users/{admin.username}",
        json={"is_active": False},
        headers=bearer(session, settings, admin),
    )
    assert response.status_code == 409


def test_change_password_needs_the_current_one(client, session, settings, alice):
    headers = bearer(session, settings, alice)
    wrong = client.post(
        "/api/v1/me/password",
        json={"current_password": "not it at all", "new_password": "brand new password"},
        headers=headers,
    )
    assert wrong.status_code == 422
    assert error_of(wrong)["loc"] == ["current_password"]
    ok = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "brand new password"},
        headers=headers,
    )
    assert ok.status_code == 204
    assert login(client, "alice", "brand new password").status_code == 200


def test_user_reads_self_but_not_others(client, session, settings, alice, viewer):
    headers = bearer(session, settings, alice)
    assert client.get("/api/v1/users/alice", headers=headers).status_code == 200
    assert client.get("/api/v1/users/victor", headers=headers).status_code == 403


def test_logout_with_a_bearer_token_revokes_it(client, session, settings, alice):
    headers = bearer(session, settings, alice)
    assert client.post("/api/v1/auth/logout", headers=headers).status_code == 204
    response = client.get("/api/v1/me", headers=headers)
    assert response.status_code == 401
    assert error_of(response)["msg"] == "The API token was revoked; create a new one."
