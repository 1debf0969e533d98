"""The services API and the Services page's fragments, through the app on both backends."""

from __future__ import annotations

from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.security.models import User
from tests.factories import bearer
from tests.services.support import Stopwatch, closed_port, silent_port, url_at

API = "/api/v1/services"
SECRET = "very-secret-rabbit-pw"
# The fixture's check timeout is 1 s; the rest is a busy machine's scheduling slack, well
# under the 4 s that the silent services below would take one after another.
ONE_TIMEOUT = 1.0 + 1.5


def _rabbit(**over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "name": "plant-rabbit",
        "kind": "amqp",
        "url": "amqp://127.0.0.1:5672/",
        "username": "guest",
        "password": "guest",
    }
    body.update(over)
    return body


@pytest.fixture
def as_admin(session: Session, settings: Settings, admin: User) -> dict[str, str]:
    return bearer(session, settings, admin)


@pytest.fixture
def as_viewer(session: Session, settings: Settings, viewer: User) -> dict[str, str]:
    return bearer(session, settings, viewer)


class _Answer(Protocol):
    def json(self) -> Any: ...


def _error(response: _Answer) -> dict[str, object]:
    detail = response.json()["detail"]
    assert len(detail) >= 1
    first: dict[str, object] = detail[0]
    return first


# --- the API -------------------------------------------------------------------------------


def test_listing_needs_a_signed_in_caller(client: TestClient) -> None:
    response = client.get(API)

    assert response.status_code == 401
    assert _error(response)["type"] == "not_authenticated"


def test_everyone_signed_in_sees_the_real_services_up(
    client: TestClient, as_viewer: dict[str, str]
) -> None:
    response = client.get(API, headers=as_viewer)

    assert response.status_code == 200
    listed = {item["name"]: item for item in response.json()}
    assert sorted(listed) == ["amqp", "mqtt", "postgres"]
    for item in listed.values():
        assert item["source"] == "settings"
        assert item["health"]["status"] == "up", item["health"]
        assert item["health"]["latency_ms"] > 0
    assert listed["amqp"]["url"] == "amqp://guest@127.0.0.1:5672/"
    assert "guest:guest" not in response.text


def test_an_admin_registers_a_service_and_its_password_never_comes_back(
    client: TestClient, session: Session, as_admin: dict[str, str]
) -> None:
    created = client.post(API, headers=as_admin, json=_rabbit(password=SECRET))
    listed = client.get(API, headers=as_admin)
    one = client.get(f"{API}/plant-rabbit", headers=as_admin)

    assert created.status_code == 201, created.text
    body = created.json()
    assert body["source"] == "registered"
    assert body["has_password"] is True
    assert "password" not in body
    for response in (created, listed, one):
        assert SECRET not in response.text
    # RabbitMQ's guest has another password: the check used the decrypted one.
    assert one.json()["health"] == one.json()["health"] | {
        "status": "down",
        "error": "authentication failed: check the username and password",
    }
    stored = session.execute(
        text("SELECT password_encrypted FROM registered_service WHERE name = 'plant-rabbit'")
    ).scalar_one()
    assert SECRET not in stored


@pytest.mark.parametrize("who", ["alice", "viewer"])
def test_users_and_viewers_cannot_register_change_or_remove(
    client: TestClient,
    session: Session,
    settings: Settings,
    as_admin: dict[str, str],
    who: str,
    request: pytest.FixtureRequest,
) -> None:
    client.post(API, headers=as_admin, json=_rabbit())
    headers = bearer(session, settings, request.getfixturevalue(who))

    responses = [
        client.post(API, headers=headers, json=_rabbit(name="mine")),
        client.patch(f"{API}/plant-rabbit", headers=headers, json={"description": "x"}),
        client.delete(f"{API}/plant-rabbit", headers=headers),
    ]

    for response in responses:
        assert response.status_code == 403
        assert _error(response)["type"] == "permission_denied"
        assert "manage_services" in str(_error(response)["msg"])
    assert client.get(f"{API}/plant-rabbit", headers=as_admin).json()["description"] == ""


def test_a_url_of_the_wrong_kind_is_a_422_on_the_url(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    response = client.post(API, headers=as_admin, json=_rabbit(url="http://127.0.0.1:5672/"))

    assert response.status_code == 422
    assert _error(response) == {
        "type": "invalid_input",
        "msg": "amqp URLs start with amqp:// or amqps://, not http://; "
        "e.g. amqp://rabbitmq.example.org:5672/.",
        "loc": ["url"],
    }


def test_an_unknown_kind_and_an_unknown_field_are_422(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    kind = client.post(API, headers=as_admin, json=_rabbit(kind="redis"))
    extra = client.post(API, headers=as_admin, json=_rabbit(port=5672))

    assert kind.status_code == 422
    assert _error(kind)["loc"] == ["body", "kind"]
    assert extra.status_code == 422
    assert _error(extra)["loc"] == ["body", "port"]


def test_a_duplicate_name_is_409(client: TestClient, as_admin: dict[str, str]) -> None:
    client.post(API, headers=as_admin, json=_rabbit())

    response = client.post(API, headers=as_admin, json=_rabbit())

    assert response.status_code == 409
    assert _error(response) == {
        "type": "conflict",
        "msg": "A service named 'plant-rabbit' already exists.",
        "loc": ["name"],
    }


def test_patch_changes_only_what_is_sent(client: TestClient, as_admin: dict[str, str]) -> None:
    client.post(API, headers=as_admin, json=_rabbit(description="old"))

    changed = client.patch(
        f"{API}/plant-rabbit", headers=as_admin, json={"description": "new", "password": None}
    )
    null_url = client.patch(f"{API}/plant-rabbit", headers=as_admin, json={"url": None})

    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["description"], body["has_password"], body["username"]) == ("new", False, "guest")
    assert body["url"] == "amqp://127.0.0.1:5672/"
    assert null_url.status_code == 422
    assert "url cannot be null" in str(_error(null_url)["msg"])


def test_delete_is_204_then_404(client: TestClient, as_admin: dict[str, str]) -> None:
    client.post(API, headers=as_admin, json=_rabbit())

    deleted = client.delete(f"{API}/plant-rabbit", headers=as_admin)
    again = client.get(f"{API}/plant-rabbit", headers=as_admin)

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert _error(again)["type"] == "not_found"


def test_a_platform_service_cannot_be_deleted_through_the_api(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    response = client.delete(f"{API}/mqtt", headers=as_admin)

    assert response.status_code == 409
    assert _error(response)["type"] == "conflict"


def test_check_runs_a_fresh_check(client: TestClient, as_viewer: dict[str, str]) -> None:
    first = client.get(f"{API}/mqtt", headers=as_viewer).json()["health"]
    cached = client.get(f"{API}/mqtt", headers=as_viewer).json()["health"]
    fresh = client.post(f"{API}/mqtt/check", headers=as_viewer).json()["health"]

    assert cached["checked_at"] == first["checked_at"]
    assert fresh["checked_at"] > first["checked_at"]
    assert fresh["status"] == "up"


def test_dead_services_make_the_listing_wait_one_timeout_not_the_sum(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    with silent_port() as silent, closed_port() as closed:
        for kind in ("mqtt", "amqp", "postgres", "http"):
            url = url_at(kind, silent)
            body = {"name": f"silent-{kind}", "kind": kind, "url": url}
            assert client.post(API, headers=as_admin, json=body).status_code == 201
        body = {"name": "refused", "kind": "amqp", "url": url_at("amqp", closed)}
        assert client.post(API, headers=as_admin, json=body).status_code == 201
        watch = Stopwatch()
        response = client.get(API, headers=as_admin)
        elapsed = watch.elapsed

    assert response.status_code == 200
    assert elapsed < ONE_TIMEOUT  # four silent services in a row would take 4 s
    health = {item["name"]: item["health"] for item in response.json()}
    for kind in ("mqtt", "amqp", "postgres", "http"):
        assert health[f"silent-{kind}"]["status"] == "down"
        assert health[f"silent-{kind}"]["error"] == "no answer within 1 s"
    assert health["refused"]["error"] == "connection refused: nothing listens at that address"
    assert health["mqtt"]["status"] == "up"


# --- the page and its fragments ------------------------------------------------------------


def test_the_page_renders_without_waiting_for_a_silent_service(
    client: TestClient, as_viewer: dict[str, str], as_admin: dict[str, str]
) -> None:
    with silent_port() as silent:
        body = {"name": "hung-broker", "kind": "mqtt", "url": url_at("mqtt", silent)}
        client.post(API, headers=as_admin, json=body)
        page = client.get("/services", headers=as_viewer)
        fragment = client.get("/service-catalogue/hung-broker/health", headers=as_viewer)

    assert page.status_code == 200
    # "unknown" (shown as "checking…") proves the page ran no check: one would say "down".
    assert 'id="service-hung-broker"' in page.text
    assert 'hx-get="/service-catalogue/hung-broker/health" hx-trigger="load"' in page.text
    assert 'data-status="unknown"' in page.text
    assert 'id="service-form"' not in page.text  # viewers get no form
    assert fragment.status_code == 200
    assert 'data-status="down"' in fragment.text
    assert "no answer within 1 s" in fragment.text


def test_the_page_shows_how_to_connect(client: TestClient, as_viewer: dict[str, str]) -> None:
    page = client.get("/services", headers=as_viewer)

    assert "DTAAS_MQTT_URL" in page.text
    assert "DTAAS_TOPIC_PREFIX" in page.text
    assert "pika.URLParameters(os.environ[&#34;DTAAS_AMQP_URL&#34;])" in page.text
    assert 'href="/services" aria-current="page"' in page.text


def test_the_form_shows_each_problem_under_its_field(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    form = {"name": "Bad Name", "kind": "amqp", "url": "mqtt://x"}

    response = client.post("/service-catalogue", headers=as_admin, data=form)

    assert response.status_code == 422
    assert 'id="service-name-error"' in response.text
    assert 'id="service-url-error"' in response.text
    assert "amqp URLs start with amqp:// or amqps://, not mqtt://" in response.text
    assert 'value="Bad Name"' in response.text  # what was typed stays


def test_the_form_registers_edits_and_removes(client: TestClient, as_admin: dict[str, str]) -> None:
    form = {"name": "plant-rabbit", "kind": "amqp", "url": "amqp://127.0.0.1:5672/"}
    form |= {"username": "guest", "password": SECRET}

    created = client.post("/service-catalogue", headers=as_admin, data=form)
    edit = client.get("/service-catalogue/plant-rabbit/edit", headers=as_admin)
    saved = client.post(
        "/service-catalogue/plant-rabbit",
        headers=as_admin,
        data={"kind": "amqp", "url": "amqp://127.0.0.1:5672/", "username": "guest"},
    )
    kept = client.get(f"{API}/plant-rabbit", headers=as_admin).json()
    removed = client.delete("/service-catalogue/plant-rabbit", headers=as_admin)

    assert created.status_code == 200
    assert "Service &#39;plant-rabbit&#39; registered." in created.text
    assert 'id="service-plant-rabbit"' in created.text
    assert SECRET not in created.text + edit.text
    assert 'placeholder="unchanged"' in edit.text
    assert saved.status_code == 200
    assert kept["has_password"] is True  # an empty password field keeps the stored one
    assert removed.status_code == 200
    assert 'id="service-plant-rabbit"' not in removed.text


def test_the_form_shows_a_duplicate_name_next_to_the_name(
    client: TestClient, as_admin: dict[str, str]
) -> None:
    form = {"name": "plant-rabbit", "kind": "http", "url": "http://127.0.0.1:1/"}
    client.post("/service-catalogue", headers=as_admin, data=form)

    response = client.post("/service-catalogue", headers=as_admin, data=form)

    assert response.status_code == 409
    assert 'id="service-name-error"' in response.text
    assert "A service named &#39;plant-rabbit&#39; already exists." in response.text


def test_the_form_routes_are_for_admins_only(client: TestClient, as_viewer: dict[str, str]) -> None:
    form = {"name": "mine", "kind": "http", "url": "http://127.0.0.1/"}

    response = client.post("/service-catalogue", headers=as_viewer, data=form)

    assert response.status_code == 403
    assert _error(response)["type"] == "permission_denied"
