"""The live telemetry stream (SSE) of a real server over a socket: new points arrive as
they are stored, a reconnect resumes after the last event, a deleted instance ends it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dtaas.services import telemetry_store
from tests.live import LiveServer, run_live_server
from tests.services.telemetry.conftest import MANIFEST

START = 1_764_230_400.0
READ_TIMEOUT = 10.0  # an event the test waits for comes within a second or two


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    with run_live_server(tmp_path / "site") as server:
        server.add_user("alice")
        yield server


@pytest.fixture
def api(live: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {live.token_for('alice')}"}
    timeout = httpx.Timeout(10.0, read=READ_TIMEOUT)
    with httpx.Client(base_url=live.url, headers=headers, timeout=timeout, trust_env=False) as c:
        yield c


@pytest.fixture
def instance_id(live: LiveServer, api: httpx.Client) -> int:
    path = live.add_twin(
        "alice/digital_twins/sensor", scripts={"execute": "#!/bin/sh\n"}, manifest=MANIFEST
    )
    response = api.post("/api/v1/instances", json={"twin_path": path})
    assert response.status_code == 201, response.text
    created: int = response.json()["id"]
    return created


def _store(live: LiveServer, rows: list[telemetry_store.Row]) -> None:
    with live.sessions() as session:
        telemetry_store.insert_points(session.connection(), rows)
        session.commit()


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str | None, str]]:
    """(event, id, data) of each event of an SSE stream; comments are skipped."""
    name, event_id, data = "message", None, ""
    for line in lines:
        if not line:
            if data:
                yield name, event_id, data
            name, event_id, data = "message", None, ""
        elif line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("id: "):
            event_id = line.removeprefix("id: ")
        elif line.startswith("data: "):
            data += line.removeprefix("data: ")


def _next(events: Iterator[tuple[str, str | None, str]], wanted: str) -> tuple[str | None, object]:
    for name, event_id, data in events:
        if name == wanted:
            return event_id, json.loads(data)
    raise AssertionError(f"the stream ended before a {wanted!r} event")


def test_points_stored_after_the_stream_starts_arrive_live(
    live: LiveServer, api: httpx.Client, instance_id: int
) -> None:
    _store(live, [(instance_id, "x", START, -1.0)])  # before: not sent
    url = f"/api/v1/instances/{instance_id}/telemetry/events"
    with api.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response.iter_lines())
        _next(events, "ready")
        _store(live, [(instance_id, "x", START + 1, 1.0), (instance_id, "v", START + 1, 2.0)])
        event_id, data = _next(events, "points")

    assert data == {"x": {"t": [START + 1], "v": [1.0]}, "v": {"t": [START + 1], "v": [2.0]}}
    assert event_id is not None and event_id.isdigit()


def test_a_reconnect_with_last_event_id_gets_what_it_missed(
    live: LiveServer, api: httpx.Client, instance_id: int
) -> None:
    url = f"/api/v1/instances/{instance_id}/telemetry/events"
    with api.stream("GET", url, params={"field": "x"}) as response:
        events = _events(response.iter_lines())
        _next(events, "ready")
        _store(live, [(instance_id, "x", START, 1.0)])
        last_id, _ = _next(events, "points")
    assert last_id is not None
    _store(live, [(instance_id, "x", START + 1, 2.0), (instance_id, "v", START + 1, 9.0)])

    with api.stream("GET", url, params={"field": "x"}, headers={"Last-Event-ID": last_id}) as again:
        events = _events(again.iter_lines())
        _, data = _next(events, "points")

    assert data == {"x": {"t": [START + 1], "v": [2.0]}}  # only x, only what was missed


def test_the_stream_ends_when_the_instance_is_deleted(
    live: LiveServer, api: httpx.Client, instance_id: int
) -> None:
    url = f"/api/v1/instances/{instance_id}/telemetry/events"
    with api.stream("GET", url) as response:
        events = _events(response.iter_lines())
        _next(events, "ready")
        assert api.delete(f"/api/v1/instances/{instance_id}").status_code == 204
        _, data = _next(events, "end")

    assert data == {}
