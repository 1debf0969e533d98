"""The accounting API: storage by part, quotas for admins only, and their validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dtaas.security.models import User
from tests.accounting.conftest import MIB, Headers, fill
from tests.library.support import error_of

STORAGE = "/api/v1/accounting/storage"
QUOTAS = "/api/v1/accounting/quotas"


def put_quota(client: TestClient, headers: Headers, username: str, body: Any) -> Any:
    return client.put(f"{QUOTAS}/{username}", json=body, headers=headers)


def test_own_storage_shows_the_parts_the_quota_and_what_is_free(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    fill(library / "data" / "levels.csv", 3 * MIB)
    set_quota("alice", 10)

    response = client.get(STORAGE, headers=as_alice)

    assert response.status_code == 200, response.text
    assert response.json() == {
        "username": "alice",
        "library_bytes": 3 * MIB,
        "instances_bytes": 0,
        "snapshots_bytes": 0,
        "used_bytes": 3 * MIB,
        "quota_mb": 10,
        "quota_bytes": 10 * MIB,
        "free_bytes": 7 * MIB,
        "quota_source": "user",
        "over_quota": False,
    }


def test_without_a_quota_storage_is_unlimited(client: TestClient, as_alice: Headers):
    body = client.get(STORAGE, headers=as_alice).json()

    assert (body["quota_mb"], body["quota_bytes"], body["free_bytes"]) == (None, None, None)
    assert (body["quota_source"], body["over_quota"]) == ("site", False)


def test_admin_reads_a_users_storage_and_a_user_only_their_own(
    client: TestClient, as_admin: Headers, as_alice: Headers, bob: User, library: Path
):
    fill(library / "data" / "x.bin", 1234)

    by_admin = client.get(f"{STORAGE}/alice", headers=as_admin)
    by_herself = client.get(f"{STORAGE}/alice", headers=as_alice)
    of_bob = client.get(f"{STORAGE}/bob", headers=as_alice)
    unknown = client.get(f"{STORAGE}/nobody", headers=as_admin)

    assert by_admin.status_code == 200, by_admin.text
    assert (by_admin.json()["username"], by_admin.json()["library_bytes"]) == ("alice", 1234)
    assert by_herself.json() == by_admin.json()
    assert of_bob.status_code == 403
    assert error_of(of_bob)["type"] == "permission_denied"
    assert unknown.status_code == 404
    assert error_of(unknown)["msg"] == "There is no user named 'nobody'."


def test_admin_sets_a_quota_and_resets_it_to_the_site_default(
    client: TestClient, as_admin: Headers, alice: User
):
    set_ = put_quota(client, as_admin, "alice", {"quota_mb": 25})
    listed = client.get(QUOTAS, headers=as_admin)
    reset = put_quota(client, as_admin, "alice", {"quota_mb": None})

    assert set_.status_code == 200, set_.text
    assert (set_.json()["quota_mb"], set_.json()["quota_source"]) == (25, "user")
    assert listed.status_code == 200
    alice_row = next(row for row in listed.json() if row["username"] == "alice")
    assert (alice_row["quota_mb"], alice_row["quota_bytes"]) == (25, 25 * MIB)
    assert reset.status_code == 200
    assert (reset.json()["quota_mb"], reset.json()["quota_source"]) == (None, "site")


def test_zero_is_a_quota_that_refuses_everything(
    client: TestClient, as_admin: Headers, alice: User
):
    response = put_quota(client, as_admin, "alice", {"quota_mb": 0})

    assert response.status_code == 200
    assert (response.json()["quota_bytes"], response.json()["free_bytes"]) == (0, 0)


def test_quota_routes_are_for_admins_only(client: TestClient, as_alice: Headers, bob: User):
    setting = put_quota(client, as_alice, "alice", {"quota_mb": 10_000})
    listing = client.get(QUOTAS, headers=as_alice)

    for response in (setting, listing):
        assert response.status_code == 403
        assert error_of(response) == {
            "type": "permission_denied",
            "msg": "Your role 'user' does not allow 'manage_users'; ask an administrator "
            "for a role that does.",
            "loc": [],
        }
    assert client.get(STORAGE, headers=as_alice).json()["quota_mb"] is None


def test_anonymous_callers_are_not_authenticated(client: TestClient, alice: User):
    for method, path in [
        ("GET", STORAGE),
        ("GET", f"{STORAGE}/alice"),
        ("GET", QUOTAS),
        ("PUT", f"{QUOTAS}/alice"),
    ]:
        response = client.request(method, path, json={"quota_mb": 1})

        assert response.status_code == 401, f"{method} {path}"
        assert error_of(response)["type"] == "not_authenticated"


NOT_AN_INT = "Input should be a valid integer"


@pytest.mark.parametrize(
    ("body", "kind", "field", "message"),
    [
        (
            {"quota_mb": -1},
            "greater_than_equal",
            "quota_mb",
            "Input should be greater than or equal to 0",
        ),
        (
            {"quota_mb": 1024**3 + 1},
            "less_than_equal",
            "quota_mb",
            "Input should be less than or equal to 1073741824",
        ),
        ({"quota_mb": "10"}, "int_type", "quota_mb", NOT_AN_INT),
        ({"quota_mb": 1.5}, "int_type", "quota_mb", NOT_AN_INT),
        ({"quota_mb": True}, "int_type", "quota_mb", NOT_AN_INT),
        ({}, "missing", "quota_mb", "Field required"),
        (
            {"quota_mb": 1, "unit": "GB"},
            "extra_forbidden",
            "unit",
            "Extra inputs are not permitted",
        ),
    ],
)
def test_a_quota_that_is_not_a_whole_non_negative_number_is_422(
    client: TestClient,
    as_admin: Headers,
    alice: User,
    body: Any,
    kind: str,
    field: str,
    message: str,
):
    response = put_quota(client, as_admin, "alice", body)

    assert response.status_code == 422, response.text
    assert response.json()["detail"] == [{"type": kind, "msg": message, "loc": ["body", field]}]
    assert client.get(f"{STORAGE}/alice", headers=as_admin).json()["quota_mb"] is None


def test_quota_for_an_unknown_user_is_404(client: TestClient, as_admin: Headers):
    response = put_quota(client, as_admin, "nobody", {"quota_mb": 5})

    assert response.status_code == 404
    assert error_of(response) == {
        "type": "not_found",
        "msg": "There is no user named 'nobody'.",
        "loc": ["username"],
    }
