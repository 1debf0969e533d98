"""The telemetry API through the app on both backends: its parameters validated with
precise messages, only the owner answered, and CSV export."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.security.models import User
from dtaas.services import telemetry_store
from tests.factories import bearer, make_user
from tests.lifecycle.conftest import bound_sessions
from tests.live import write_twin_folder
from tests.services.telemetry.conftest import MANIFEST

API = "/api/v1"
START = 1_764_230_400.0


@pytest.fixture
def as_alice(session: Session, settings: Settings, alice: User) -> dict[str, str]:
    return bearer(session, settings, alice)


@pytest.fixture
def as_bob(session: Session, settings: Settings) -> dict[str, str]:
    return bearer(session, settings, make_user(session, settings, username="bob"))


@pytest.fixture
def instance_id(client: TestClient, settings: Settings, as_alice: dict[str, str]) -> int:
    name = f"sensor-{uuid.uuid4().hex[:8]}"
    write_twin_folder(
        settings.resolved_files_dir / "alice" / "digital_twins" / name,
        scripts={"execute": "#!/bin/sh\necho hi\n"},
        manifest=MANIFEST,
    )
    response = client.post(
        f"{API}/instances", json={"twin_path": f"alice/digital_twins/{name}"}, headers=as_alice
    )
    assert response.status_code == 201, response.text
    created: int = response.json()["id"]
    return created


@pytest.fixture
def points(session: Session, instance_id: int) -> None:
    rows = [(instance_id, "x", START + n, float(n)) for n in range(1000)]
    rows += [(instance_id, "extra", START, 7.0)]
    telemetry_store.insert_points(session.connection(), rows)
    session.commit()


class _Answer(Protocol):
    def json(self) -> Any: ...


def _error(response: _Answer) -> dict[str, object]:
    first: dict[str, object] = response.json()["detail"][0]
    return first


def test_fields_name_the_declared_and_the_sent(
    client: TestClient, as_alice: dict[str, str], instance_id: int, points: None
) -> None:
    response = client.get(f"{API}/instances/{instance_id}/telemetry/fields", headers=as_alice)

    assert response.status_code == 200, response.text
    fields = response.json()["fields"]
    assert [(f["field"], f["unit"], f["declared"]) for f in fields] == [
        ("x", "m", True),
        ("v", "m/s", True),
        ("extra", "", False),
    ]
    assert fields[0]["last_ts"] == START + 999


def test_a_series_is_downsampled_to_the_points_asked_for(
    client: TestClient, as_alice: dict[str, str], instance_id: int, points: None
) -> None:
    response = client.get(
        f"{API}/instances/{instance_id}/telemetry",
        params={"field": "x", "points": 100},
        headers=as_alice,
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["raw_points"], body["downsampled"], len(body["t"])) == (1000, True, 100)
    assert (min(body["min"]), max(body["max"]), sum(body["count"])) == (0.0, 999.0, 1000)


@pytest.mark.parametrize(
    ("params", "status", "kind", "loc", "message"),
    [
        ({}, 422, "missing", ["query", "field"], "Field required"),
        ({"field": "x", "points": 1}, 422, "greater_than_equal", ["query", "points"], "2"),
        ({"field": "x", "points": "many"}, 422, "int_parsing", ["query", "points"], "integer"),
        ({"field": "x y"}, 422, "invalid_input", ["query", "field"], "not a telemetry field"),
        ({"field": "x", "start": "noon"}, 422, "invalid_input", ["query", "start"], "ISO 8601"),
        (
            {"field": "x", "start": "2025-11-28T00:00:00Z", "end": "2025-11-27T00:00:00Z"},
            422,
            "invalid_input",
            ["query", "start"],
            "start (2025-11-28T00:00:00Z) must be before end (2025-11-27T00:00:00Z).",
        ),
        ({"field": "nope"}, 404, "not_found", ["query", "field"], "no telemetry field 'nope'"),
    ],
)
def test_bad_series_parameters_say_what_is_wrong(
    client: TestClient,
    as_alice: dict[str, str],
    instance_id: int,
    params: dict[str, Any],
    status: int,
    kind: str,
    loc: list[str],
    message: str,
) -> None:
    response = client.get(
        f"{API}/instances/{instance_id}/telemetry", params=params, headers=as_alice
    )

    assert response.status_code == status, response.text
    error = _error(response)
    assert (error["type"], error["loc"]) == (kind, loc)
    assert message in str(error["msg"])


@pytest.mark.parametrize(
    "path", ["telemetry/fields", "telemetry?field=x", "telemetry.csv", "telemetry/events"]
)
def test_another_users_instance_is_not_found(
    client: TestClient, as_bob: dict[str, str], instance_id: int, points: None, path: str
) -> None:
    response = client.get(f"{API}/instances/{instance_id}/{path}", headers=as_bob)

    assert response.status_code == 404, response.text
    assert _error(response) == {
        "type": "not_found",
        "msg": f"There is no instance {instance_id}.",
        "loc": ["instance_id"],
    }


def test_telemetry_needs_a_signed_in_caller(client: TestClient, instance_id: int) -> None:
    response = client.get(f"{API}/instances/{instance_id}/telemetry/fields")

    assert response.status_code == 401
    assert _error(response)["type"] == "not_authenticated"


def test_csv_export_streams_the_chosen_fields(
    client: TestClient, session: Session, as_alice: dict[str, str], instance_id: int, points: None
) -> None:
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]

    response = client.get(
        f"{API}/instances/{instance_id}/telemetry.csv",
        params={"field": ["extra", "x"], "end": str(START + 1)},
        headers=as_alice,
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="instance-{instance_id}-telemetry.csv"'
    )
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["time", "epoch_seconds", "field", "value"],
        ["2025-11-27T08:00:00Z", repr(START), "extra", "7.0"],
        ["2025-11-27T08:00:00Z", repr(START), "x", "0.0"],
        ["2025-11-27T08:00:01Z", repr(START + 1), "x", "1.0"],
    ]


def test_csv_export_refuses_a_bad_field_name_by_its_position(
    client: TestClient, as_alice: dict[str, str], instance_id: int
) -> None:
    response = client.get(
        f"{API}/instances/{instance_id}/telemetry.csv",
        params={"field": ["x", "no/slash"]},
        headers=as_alice,
    )

    assert response.status_code == 422
    assert _error(response)["loc"] == ["query", "field", 1]


def test_a_stream_refuses_a_last_event_id_it_never_sent(
    client: TestClient, as_alice: dict[str, str], instance_id: int
) -> None:
    response = client.get(
        f"{API}/instances/{instance_id}/telemetry/events",
        headers={**as_alice, "Last-Event-ID": "abc"},
    )

    assert response.status_code == 422
    error = _error(response)
    assert error["loc"] == ["header", "Last-Event-ID"]
    assert "is not an event id of this stream" in str(error["msg"])
