"""The Python client: schema models back from a real server, and errors rebuilt as classes."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from dtaas.client import Client, Credentials
from dtaas.errors import (
    ERROR_TYPES,
    BackendUnavailable,
    Conflict,
    DtaasError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    TooManyRequests,
)
from dtaas.security.models import Role
from dtaas.security.schemas import Me, TokenCreated, TokenRead, UserRead
from tests.factories import PASSWORD
from tests.live import LiveServer, closed_port_url


def admin(live: LiveServer) -> Client:
    return Client(live.url, token=live.token_for("root"))


def alice(live: LiveServer) -> Client:
    return Client(live.url, token=live.token_for("alice"))


# --- models back from the server ----------------------------------------------------------


def test_sign_in_returns_a_client_acting_as_the_user(live: LiveServer) -> None:
    with Client.sign_in(live.url, username="alice", password=PASSWORD) as client:
        me = client.whoami()

    assert isinstance(me, Me)
    assert isinstance(me.user, UserRead)
    assert (me.user.username, me.user.role, me.auth) == ("alice", Role.USER, "token")
    assert me.organisation == "Demo organisation"
    assert "manage_users" not in me.permissions


def test_tokens_are_created_listed_and_revoked(live: LiveServer) -> None:
    with alice(live) as client:
        created = client.create_token(name="ci", expires_in_days=7)
        listed = client.list_tokens()
        revoked = client.revoke_token(token_id=created.id)

    assert isinstance(created, TokenCreated)
    assert created.token.startswith(created.prefix)
    assert abs(created.expires_at - created.created_at - timedelta(days=7)) < timedelta(minutes=1)
    assert all(isinstance(token, TokenRead) for token in listed)
    assert created.id in {token.id for token in listed}
    assert not any(isinstance(token, TokenCreated) for token in listed)  # no secrets listed
    assert isinstance(revoked, TokenRead)
    assert revoked.revoked_at is not None
    with Client(live.url, token=created.token) as ci, pytest.raises(NotAuthenticated) as caught:
        ci.whoami()
    assert caught.value.message == "The API token was revoked; create a new one."


def test_create_token_with_password_names_the_token(live: LiveServer) -> None:
    with Client(live.url) as anonymous:
        created = anonymous.create_token_with_password(
            username="alice", password=PASSWORD, token_name="laptop"
        )

    assert isinstance(created, TokenCreated)
    assert created.name == "laptop"


def test_admin_lists_creates_and_updates_users(live: LiveServer) -> None:
    with admin(live) as client:
        created = client.create_user(
            username="carol", password=PASSWORD, role=Role.VIEWER, full_name="Carol Example"
        )
        listed = client.list_users()
        updated = client.update_user(
            username="carol", role=Role.USER, full_name="Carol E.", is_active=False
        )

    assert isinstance(created, UserRead)
    assert (created.username, created.role, created.full_name) == (
        "carol",
        Role.VIEWER,
        "Carol Example",
    )
    assert all(isinstance(user, UserRead) for user in listed)
    assert [user.username for user in listed] == ["alice", "carol", "root"]
    assert isinstance(updated, UserRead)
    assert (updated.role, updated.full_name, updated.is_active) == (Role.USER, "Carol E.", False)


def test_health_answers(live: LiveServer) -> None:
    with Client(live.url) as client:
        assert client.health() == {"status": "ok", "database": "ok"}


# --- errors rebuilt from the server's answers -----------------------------------------------


def test_wrong_password_is_not_authenticated(live: LiveServer) -> None:
    with pytest.raises(NotAuthenticated) as caught:
        Client.sign_in(live.url, username="alice", password="wrong-password")

    assert caught.value.message == "Wrong username or password."
    assert caught.value.status_code == 401
    assert caught.value.loc == ["password"]


def test_listing_users_without_the_role_is_permission_denied(live: LiveServer) -> None:
    with alice(live) as client, pytest.raises(PermissionDenied) as caught:
        client.list_users()

    assert type(caught.value) is PermissionDenied
    assert caught.value.message == (
        "Your role 'user' does not allow 'manage_users'; ask an administrator for a role that does."
    )


def test_unknown_user_is_not_found(live: LiveServer) -> None:
    with admin(live) as client, pytest.raises(NotFound) as caught:
        client.update_user(username="nobody", is_active=False)

    assert caught.value.message == "There is no user named 'nobody'."
    assert caught.value.loc == ["username"]


def test_unknown_token_is_not_found(live: LiveServer) -> None:
    with alice(live) as client, pytest.raises(NotFound) as caught:
        client.revoke_token(token_id=999_999)

    assert caught.value.message == "There is no token with id 999999."


def test_duplicate_user_is_a_conflict(live: LiveServer) -> None:
    with admin(live) as client, pytest.raises(Conflict) as caught:
        client.create_user(username="alice", password=PASSWORD)

    assert caught.value.message == "A user named 'alice' already exists."


def test_reserved_username_is_invalid_input(live: LiveServer) -> None:
    with admin(live) as client, pytest.raises(InvalidInput) as caught:
        client.create_user(username="common", password=PASSWORD)

    assert caught.value.message == "Username 'common' is reserved by the platform; choose another."
    assert caught.value.loc == ["username"]


def test_schema_validation_error_keeps_422_and_names_the_field(live: LiveServer) -> None:
    with admin(live) as client, pytest.raises(DtaasError) as caught:
        client.create_user(username="dave", password="short")

    assert caught.value.status_code == 422
    assert caught.value.message == "password: String should have at least 10 characters"
    assert caught.value.loc == ["body", "password"]


def test_sign_in_after_repeated_failures_is_too_many_requests(live: LiveServer) -> None:
    failures = live.settings.login_max_failures
    for _ in range(failures):
        with pytest.raises(NotAuthenticated):
            Client.sign_in(live.url, username="alice", password="wrong-password")

    with pytest.raises(TooManyRequests) as caught:
        Client.sign_in(live.url, username="alice", password=PASSWORD)  # even the right one

    retry_after = caught.value.retry_after
    assert 1 <= retry_after <= live.settings.login_window_seconds + 1
    assert caught.value.message == (
        f"Too many failed sign-ins for 'alice'; try again in {retry_after} seconds."
    )


def test_unreachable_server_is_backend_unavailable() -> None:
    with (
        closed_port_url() as url,
        Client(url) as client,
        pytest.raises(BackendUnavailable) as caught,
    ):
        client.whoami()

    assert caught.value.message.startswith(f"Cannot reach the dtaas server at {url}: ")
    assert caught.value.message.endswith(". Is it running?")


def test_server_that_does_not_answer_in_time_is_backend_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with (
        Client("http://dtaas.test", transport=httpx.MockTransport(handler)) as client,
        pytest.raises(BackendUnavailable) as caught,
    ):
        client.whoami()

    assert caught.value.message == (
        "The dtaas server at http://dtaas.test did not answer in time; try again later."
    )


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://example.org", "http://[::1"])
def test_server_url_must_be_http(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Client(url)

    assert caught.value.message.startswith(f"The server URL {url!r} ")
    assert caught.value.message.endswith("e.g. http://127.0.0.1:8000.")


# --- the error mapping itself, against canned answers ---------------------------------------


def _answering(status: int, body: object, headers: dict[str, str] | None = None) -> Client:
    """A client whose every request gets this answer: text as is, anything else as JSON."""

    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers, request=request)
        return httpx.Response(status, json=body, headers=headers, request=request)

    return Client("http://dtaas.test", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("error_class", ERROR_TYPES.values(), ids=list(ERROR_TYPES))
def test_every_error_type_is_rebuilt_as_its_class(error_class: type[DtaasError]) -> None:
    body = {"detail": [{"type": error_class.type, "msg": "It went wrong.", "loc": ["x"]}]}

    with (
        _answering(error_class.status_code, body, headers={"Retry-After": "7"}) as client,
        pytest.raises(DtaasError) as caught,
    ):
        client.whoami()

    assert type(caught.value) is error_class
    assert caught.value.message == "It went wrong."
    assert caught.value.loc == ["x"]


def test_too_many_requests_takes_retry_after_from_the_header() -> None:
    body = {"detail": [{"type": "too_many_requests", "msg": "Slow down.", "loc": []}]}

    with (
        _answering(429, body, headers={"Retry-After": "42"}) as client,
        pytest.raises(TooManyRequests) as caught,
    ):
        client.whoami()

    assert caught.value.retry_after == 42


def test_too_many_requests_without_retry_after_waits_one_second() -> None:
    body = {"detail": [{"type": "too_many_requests", "msg": "Slow down.", "loc": []}]}

    with _answering(429, body) as client, pytest.raises(TooManyRequests) as caught:
        client.whoami()

    assert caught.value.retry_after == 1


def test_error_without_our_body_keeps_the_status() -> None:
    with (
        _answering(502, "<html>Bad Gateway</html>") as client,
        pytest.raises(DtaasError) as caught,
    ):
        client.whoami()

    assert type(caught.value) is DtaasError
    assert caught.value.message == "The server answered 502 Bad Gateway."


@pytest.mark.parametrize("answer", ["<html>a login page</html>", {"unexpected": True}])
def test_success_that_is_not_a_dtaas_answer_is_reported(answer: object) -> None:
    with _answering(200, answer) as client, pytest.raises(DtaasError) as caught:
        client.whoami()

    assert caught.value.message == (
        "The server at http://dtaas.test did not answer like a dtaas server; check the server URL."
    )


# --- stored credentials -------------------------------------------------------------------


def test_credentials_round_trip_readable_by_the_owner_only(credentials_file: Path) -> None:
    stored = Credentials(server="http://127.0.0.1:8000", username="alice", token="t", token_id=3)

    assert stored.save() == credentials_file

    assert Credentials.load() == stored
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials_file.parent.stat().st_mode) == 0o700


def test_credentials_replace_a_leftover_file_with_wider_modes(credentials_file: Path) -> None:
    credentials_file.parent.mkdir(mode=0o700)
    leftover = credentials_file.with_name("credentials.tmp")
    leftover.write_text("old")
    leftover.chmod(0o644)

    Credentials(server="http://127.0.0.1:8000", username="alice", token="t").save()

    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert json.loads(credentials_file.read_text())["token"] == "t"


def test_missing_credentials_say_to_log_in(credentials_file: Path) -> None:
    with pytest.raises(NotAuthenticated) as caught:
        Client.from_credentials()

    assert caught.value.message == "You are not signed in; run `dtaas login` first."


def test_credentials_from_before_token_ids_still_load(credentials_file: Path) -> None:
    credentials_file.parent.mkdir(mode=0o700)
    credentials_file.write_text(
        '{"server": "http://127.0.0.1:8000", "username": "a", "token": "t"}'
    )

    assert Credentials.load().token_id is None
