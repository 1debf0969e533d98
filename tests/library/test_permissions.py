"""Who may do what where in the library: every route, every kind of caller, every area.

The areas are seen from the caller: *own* is the caller's own area (``alice/`` for Alice,
``bob/`` for Bob ...), *other* is another user's area (``bob/`` for Alice, ``alice/`` for
everyone else), *common* is ``common/``. Anonymous callers have no area; for them *own*
is Alice's. The rule: everyone reads their own area and common; writing the own area
needs the role user or admin; writing common needs admin; another user's area is
forbidden to everyone, admins included; without credentials everything is 401.

GraphQL answers HTTP 200 with an error instead of a 403, so its 403 cells mean "data
null and one error"; an anonymous GraphQL request is a plain 401.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.library.access import ensure_area
from dtaas.security.models import Role
from tests.factories import bearer, make_user
from tests.library.support import (
    API,
    LIST_DIRECTORY,
    READ_FILE,
    SharedApp,
    error_of,
    graphql,
    graphql_error_of,
    upload,
    url,
)


@pytest.fixture
def settings(shared_app: SharedApp) -> Settings:
    """The settings of this module's one app (see SharedApp), with an empty data folder."""
    return shared_app.fresh_settings()


@pytest.fixture
def client(shared_app: SharedApp, session: Session) -> TestClient:
    """The client of this module's one app, answering with this test's session."""
    return shared_app.client_for(session)


# route      actor      own   other common
MATRIX = """
entries      owner      200   403   200
entries      other      200   403   200
entries      viewer     200   403   200
entries      admin      200   403   200
entries      anonymous  401   401   401
stat         owner      200   403   200
stat         other      200   403   200
stat         viewer     200   403   200
stat         admin      200   403   200
stat         anonymous  401   401   401
file-get     owner      200   403   200
file-get     other      200   403   200
file-get     viewer     200   403   200
file-get     admin      200   403   200
file-get     anonymous  401   401   401
file-put     owner      200   403   403
file-put     other      200   403   403
file-put     viewer     403   403   403
file-put     admin      200   403   200
file-put     anonymous  401   401   401
upload       owner      201   403   403
upload       other      201   403   403
upload       viewer     403   403   403
upload       admin      201   403   201
upload       anonymous  401   401   401
folders      owner      201   403   403
folders      other      201   403   403
folders      viewer     403   403   403
folders      admin      201   403   201
folders      anonymous  401   401   401
move         owner      200   403   403
move         other      200   403   403
move         viewer     403   403   403
move         admin      200   403   200
move         anonymous  401   401   401
copy         owner      201   403   403
copy         other      201   403   403
copy         viewer     403   403   403
copy         admin      201   403   201
copy         anonymous  401   401   401
delete       owner      204   403   403
delete       other      204   403   403
delete       viewer     403   403   403
delete       admin      204   403   204
delete       anonymous  401   401   401
archive      owner      200   403   200
archive      other      200   403   200
archive      viewer     200   403   200
archive      admin      200   403   200
archive      anonymous  401   401   401
search       owner      200   403   200
search       other      200   403   200
search       viewer     200   403   200
search       admin      200   403   200
search       anonymous  401   401   401
listDirectory owner     200   403   200
listDirectory other     200   403   200
listDirectory viewer    200   403   200
listDirectory admin     200   403   200
listDirectory anonymous 401   401   401
readFile     owner      200   403   200
readFile     other      200   403   200
readFile     viewer     200   403   200
readFile     admin      200   403   200
readFile     anonymous  401   401   401
"""

AREAS = ("own", "other", "common")
# actor: (username, role); None is anonymous.
ACTORS: dict[str, tuple[str, Role] | None] = {
    "owner": ("alice", Role.USER),
    "other": ("bob", Role.USER),
    "viewer": ("victor", Role.VIEWER),
    "admin": ("root-admin", Role.ADMIN),
    "anonymous": None,
}


def _cells() -> list[tuple[str, str, str, int]]:
    cells = []
    for line in MATRIX.strip().splitlines():
        route, actor, *statuses = line.split()
        cells += [(route, actor, area, int(s)) for area, s in zip(AREAS, statuses, strict=True)]
    return cells


CELLS = _cells()


@dataclass(frozen=True)
class Target:
    """The area a cell acts on: its user path and its real folder."""

    area: str
    root: Path

    def path(self, inner: str) -> str:
        return f"{self.area}/{inner}"


Action = Callable[[TestClient, dict[str, str], Target], httpx.Response]
# Whether a write took effect, judged on disk; None for routes that only read.
Effect = Callable[[Target], bool] | None


def _entries(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.get(url("entries", path=at.path("data")), headers=headers)


def _stat(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.get(url("stat", path=at.path("data/note.txt")), headers=headers)


def _read(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.get(url("file", path=at.path("data/note.txt")), headers=headers)


def _write(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.put(url("file", path=at.path("data/new.txt")), content=b"new", headers=headers)


def _upload(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return upload(client, headers, at.path("data"), [("sent.txt", b"sent")])


def _mkdir(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.post(f"{API}/folders", json={"path": at.path("data/made")}, headers=headers)


def _move(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    body = {"source": at.path("data/note.txt"), "destination": at.path("data/moved.txt")}
    return client.post(f"{API}/move", json=body, headers=headers)


def _copy(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    body = {"source": at.path("data/note.txt"), "destination": at.path("data/copied.txt")}
    return client.post(f"{API}/copy", json=body, headers=headers)


def _delete(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.delete(url("entries", path=at.path("data/note.txt")), headers=headers)


def _archive(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.get(url("archive", path=at.path("data")), headers=headers)


def _search(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return client.get(url("search", q="note", path=at.path("data")), headers=headers)


def _list_directory(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return graphql(client, LIST_DIRECTORY, headers, path=at.path("data"))


def _read_file(client: TestClient, headers: dict[str, str], at: Target) -> httpx.Response:
    return graphql(client, READ_FILE, headers, path=at.path("data/note.txt"))


ROUTES: dict[str, tuple[Action, Effect]] = {
    "entries": (_entries, None),
    "stat": (_stat, None),
    "file-get": (_read, None),
    "file-put": (_write, lambda at: (at.root / "data" / "new.txt").exists()),
    "upload": (_upload, lambda at: (at.root / "data" / "sent.txt").exists()),
    "folders": (_mkdir, lambda at: (at.root / "data" / "made").is_dir()),
    "move": (_move, lambda at: not (at.root / "data" / "note.txt").exists()),
    "copy": (_copy, lambda at: (at.root / "data" / "copied.txt").exists()),
    "delete": (_delete, lambda at: not (at.root / "data" / "note.txt").exists()),
    "archive": (_archive, None),
    "search": (_search, None),
    "listDirectory": (_list_directory, None),
    "readFile": (_read_file, None),
}
GRAPHQL = {"listDirectory", "readFile"}


def test_matrix_covers_every_route_actor_and_area() -> None:
    assert {(route, actor, area) for route, actor, area, _ in CELLS} == {
        (route, actor, area) for route in ROUTES for actor in ACTORS for area in AREAS
    }
    assert len(CELLS) == len(ROUTES) * len(ACTORS) * len(AREAS)


def _target(*, settings: Settings, actor: str, area: str) -> Target:
    identity = ACTORS[actor]
    own = identity[0] if identity is not None else "alice"
    name = {"own": own, "other": "bob" if own == "alice" else "alice", "common": "common"}[area]
    root = ensure_area(settings=settings, area=name)
    (root / "data" / "note.txt").write_text("a note\n")
    return Target(area=name, root=root)


def _headers(*, session: Session, settings: Settings, actor: str) -> dict[str, str]:
    identity = ACTORS[actor]
    if identity is None:
        return {}
    username, role = identity
    return bearer(session, settings, make_user(session, settings, username=username, role=role))


EXPECTED_TYPES = {401: "not_authenticated", 403: "permission_denied"}


def _observed(route: str, response: httpx.Response) -> tuple[int, str | None]:
    """The status a cell got and its error type (None on success).

    A GraphQL refusal (HTTP 200, an error, no data) counts as 403 when its message is
    the library's permission message.
    """
    if route in GRAPHQL and response.status_code == 200:
        if response.json().get("errors") is None:
            assert response.json()["data"] is not None, response.text
            return 200, None
        message = graphql_error_of(response)
        return (403, "permission_denied") if "is not your library" in message else (200, message)
    if response.status_code >= 400:
        return response.status_code, error_of(response)["type"]
    return response.status_code, None


@pytest.mark.parametrize(
    ("route", "actor", "area", "expected"),
    [pytest.param(*cell, id=f"{cell[0]}-{cell[1]}-{cell[2]}") for cell in CELLS],
)
def test_permission(
    client: TestClient,
    session: Session,
    settings: Settings,
    route: str,
    actor: str,
    area: str,
    expected: int,
) -> None:
    headers = _headers(session=session, settings=settings, actor=actor)
    target = _target(settings=settings, actor=actor, area=area)
    action, effect = ROUTES[route]
    response = action(client, headers, target)
    assert _observed(route, response) == (expected, EXPECTED_TYPES.get(expected)), response.text
    if effect is not None:
        # A refused write leaves no trace; an allowed one really happened.
        assert effect(target) is (expected < 400)
