"""Path escapes through every route: no hostile path reaches past the caller's own areas.

Alice (role user) throws a corpus of hostile paths at every path-taking route and
parameter. Bob's area, a folder next to the files root, a stand-in database file and
``/etc`` hold markers that must never show up in an answer, and the tree outside Alice's
area must stay unchanged: compared after every input of a writing route, and after the
whole corpus of a reading one.

The corpus is the resolver's ``HOSTILE`` list (``tests/library/test_paths.py``) inside
Alice's area, whose symlink names are rebuilt there pointing at Bob, the files root and
beyond, plus cross-area tricks. One test per route loops over the whole corpus (a client
per input would take minutes) and reports every input that got through, not just the
first.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.errors import PermissionDenied
from dtaas.security.models import User
from tests.library.support import (
    API,
    LIST_DIRECTORY,
    READ_FILE,
    SharedApp,
    error_of,
    graphql,
    graphql_error_of,
    post_json,
    snapshot,
    upload,
    url,
)
from tests.library.test_paths import HOSTILE, NEEDS_DEVICE


@pytest.fixture
def settings(shared_app: SharedApp) -> Settings:
    """The settings of this module's one app (see SharedApp), with an empty data folder."""
    return shared_app.fresh_settings()


@pytest.fixture
def client(shared_app: SharedApp, session: Session) -> TestClient:
    """The client of this module's one app, answering with this test's session."""
    return shared_app.client_for(session)


SENTINEL = "SENTINEL-3f9c-must-never-leak"
PASSWD_LINE = "root:x:0:0"  # the first line of /etc/passwd
# The statuses a refused path may get: malformed, forbidden, missing, or too long for the
# schema. Anything else (409, 412, 428, 2xx) means the path was resolved and used.
REFUSALS = {400, 403, 404, 422}

# The symlink names HOSTILE uses, rebuilt in Alice's area. Targets in braces are filled in
# by the fixture: {bob} Bob's area, {files} the files root, {outside} a folder next to it,
# {decoy} an area whose name starts with "alice", {db} a stand-in database file next to
# the files root, {database} the test's SQLite file (the stand-in on PostgreSQL), {tmp}
# the test's temporary folder.
LINKS = {
    "to_etc": "/etc",
    "to_parent": "..",
    "to_sibling": "../bob",
    "to_sibling_abs": "{bob}",
    "prefix_trick": "{decoy}",
    "chain1": "data/chain2",  # inside; only the second link leaves
    "data/chain2": "../../../outside",
    "inner_a": "inner_b",
    "inner_b": "/etc",
    "up3": "../../..",
    "data/up": "../..",
    "data/sub/deep_out": "../../../../outside",
    "dangling_out": "/nonexistent-dtaas-target",
    "dangling_rel": "../missing",
    "data/dangle": "../../nowhere",
    "to_fs_root": "/",
    "to_proc": "/proc/self/root",
    "to_tmp_parent": "{tmp}",
    "climb_via_inside": "data/sub/../../..",
    "loop_a": "loop_b",
    "loop_b": "loop_a",
    "self_loop": "self_loop",
    "link_to_fifo": "fifo",
    "link_to_chardev": "chardev",
    # cross-area links
    "data/to_bob": "../../bob",
    "data/to_bob_abs": "{bob}",
    "data/to_bob_secret": "{bob}/data/secret.txt",
    "data/to_files_root": "{files}",
    "data/to_etc_passwd": "/etc/passwd",
    "data/to_db": "{db}",
    "data/to_database": "{database}",
    "data/chain_a": "chain_b",  # inside, to a link that leaves
    "data/chain_b": "{outside}",
}
COMMON_LINKS = {"data/to_bob": "{bob}", "data/to_bob_rel": "../../bob"}

CROSS_AREA = [
    # another user's area, directly and by case
    "bob",
    "bob/",
    "bob/data",
    "bob/secret.txt",
    "bob/data/secret.txt",
    "bob/data/new.txt",
    "BOB/data/secret.txt",
    "Bob/secret.txt",
    "ALICE",
    "ALICE/data",
    "Alice/data/file.txt",
    "aLiCe/secret.txt",
    "mallory",
    "mallory/data",
    "alice-evil/decoy.txt",
    # climbing out of an area
    "..",
    "../bob",
    "../bob/data/secret.txt",
    "../../etc/passwd",
    "./bob/data/secret.txt",
    "alice/..",
    "alice/../bob",
    "alice/../bob/secret.txt",
    "alice/../bob/data/secret.txt",
    "alice//../bob",
    "alice//../bob/secret.txt",
    "alice/./../bob/secret.txt",
    "alice/data/../../bob/data/secret.txt",
    "alice/data/../../../outside/secret.txt",
    "common/..",
    "common/../..",
    "common/../bob",
    "common/../bob/data/secret.txt",
    "common/../../outside/secret.txt",
    "COMMON/../bob",
    # encoded dots and slashes (left over after the one decode HTTP does)
    "%2e%2e/bob",
    "%2e%2e%2fbob%2fdata",
    "alice/%2e%2e/bob/secret.txt",
    "alice%2f..%2fbob",
    "alice%2F%2E%2E%2Fbob%2Fsecret.txt",
    "alice/..%2fbob/secret.txt",
    "alice%2fdata",
    "bob%2fdata%2fsecret.txt",
    "alice/%252e%252e/bob",
    "%252e%252e/bob",
    "alice/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    # backslashes and look-alikes
    "alice\\..\\bob\\secret.txt",
    "alice/..\\bob",
    "alice/\uff0e\uff0e/bob",
    "alice/\u2024\u2024/bob",
    "alice/..\u2215bob",
    "\uff0e\uff0e/bob",
    "alice\u2215..\u2215bob",
    # absolute paths
    "/bob/data/secret.txt",
    "//bob/secret.txt",
    "/alice/../bob",
    "/etc/passwd",
    "/proc/self/root/etc/passwd",
    "~bob/data",
    "~/../bob",
    "files/bob/data/secret.txt",
    # control characters and padding around the area name
    "alice\x00/../bob",
    "bob\x00",
    " alice/data",
    "alice /data",
    "alice\t/data",
    "alice\n/../bob",
    # through symlinks: into Bob's area, the files root, /etc, the database, out of common
    "alice/data/to_bob",
    "alice/data/to_bob/secret.txt",
    "alice/data/to_bob/data/secret.txt",
    "alice/data/to_bob/data/new.txt",
    "alice/data/to_bob_abs/secret.txt",
    "alice/data/to_bob_abs/data",
    "alice/data/to_bob_secret",
    "alice/data/to_files_root",
    "alice/data/to_files_root/bob/secret.txt",
    "alice/data/to_files_root/alice/data/file.txt",
    "alice/data/to_etc_passwd",
    "alice/data/to_db",
    "alice/data/to_database",
    "alice/data/chain_a",
    "alice/data/chain_a/secret.txt",
    "alice/data/chain_a/new.txt",
    "alice/to_sibling/data/secret.txt",
    "alice/to_parent/bob/secret.txt",
    "common/data/to_bob",
    "common/data/to_bob/secret.txt",
    "common/data/to_bob/data/secret.txt",
    "common/data/to_bob_rel/secret.txt",
]


def _corpus() -> list[str]:
    # "alice/" + "/" is Alice's own area, a legal path; every other entry stays hostile.
    inside = [f"alice/{path}" for path, _ in HOSTILE if path != "/"]
    return list(dict.fromkeys([*inside, *CROSS_AREA]))


CORPUS = _corpus()


@dataclass(frozen=True)
class Site:
    """The trap-filled files root of one test and where its markers lie."""

    data_dir: Path
    files: Path
    alice_area: Path
    headers: dict[str, str]
    absolute_inputs: list[str]

    def outside_alice(self) -> dict[str, tuple[object, ...]]:
        """Everything next to and under the files root, except Alice's area."""
        return snapshot(self.data_dir, exclude=(self.alice_area,))

    def alice_files_with_sentinel(self) -> list[str]:
        found = []
        for folder, _dirs, names in os.walk(self.alice_area):
            for name in names:
                path = Path(folder) / name
                # Regular files only: opening the FIFO among the traps would block.
                if stat.S_ISREG(path.lstat().st_mode) and SENTINEL in path.read_text(
                    errors="replace"
                ):
                    found.append(path.relative_to(self.alice_area).as_posix())
        return found


def _fill(template: str, places: dict[str, Path]) -> str:
    return template.format(**{name: str(path) for name, path in places.items()})


@pytest.fixture
def site(
    settings: Settings,
    tmp_path: Path,
    alice: User,
    bob: User,
    as_alice: dict[str, str],
) -> Site:
    files = settings.resolved_files_dir
    data_dir = settings.data_dir.resolve()
    area = files / "alice"
    outside = data_dir / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(f"outside {SENTINEL}\n")
    (files / "bob" / "secret.txt").write_text(f"bob {SENTINEL}\n")
    (files / "bob" / "data" / "secret.txt").write_text(f"bob data {SENTINEL}\n")
    decoy = files / "alice-evil"
    decoy.mkdir()
    (decoy / "decoy.txt").write_text(f"decoy {SENTINEL}\n")
    fake_db = data_dir / "dtaas.db"
    fake_db.write_text(f"SQLite format 3 {SENTINEL}\n")
    database = settings.resolved_database_url
    real_db = (
        Path(make_url(database).database or fake_db) if database.startswith("sqlite") else fake_db
    )
    places = {
        "bob": files / "bob",
        "files": files,
        "outside": outside,
        "decoy": decoy,
        "db": fake_db,
        "database": real_db,
        "tmp": tmp_path,
    }
    (area / "data" / "sub").mkdir()
    (area / "data" / "file.txt").write_text("alice's own file\n")
    for name, target in LINKS.items():
        (area / name).symlink_to(_fill(target, places))
    for name, target in COMMON_LINKS.items():
        (files / "common" / name).symlink_to(_fill(target, places))
    os.mkfifo(area / "fifo")
    os.mkfifo(area / "data" / "fifo2")
    # A socket file outlives its socket; bind relative to stay under the 108-byte limit.
    with contextlib.chdir(area), socket.socket(socket.AF_UNIX) as server:
        server.bind("sock")
    with contextlib.suppress(PermissionError):
        os.mknod(area / "chardev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    absolute_inputs = [
        str(files / "bob" / "secret.txt"),
        str(outside / "secret.txt"),
        f"alice/{files / 'bob' / 'secret.txt'}",
        f"alice/{fake_db}",
    ]
    return Site(
        data_dir=data_dir,
        files=files,
        alice_area=area,
        headers=as_alice,
        absolute_inputs=absolute_inputs,
    )


Send = Callable[[TestClient, dict[str, str], str], httpx.Response]


@dataclass(frozen=True)
class Route:
    """How to put a hostile path into one parameter of one route."""

    send: Send
    # Whether the route writes: the trees are then compared after every input, to name
    # the culprit; after a read-only route's whole corpus otherwise, to save time.
    writes: bool
    # A lone surrogate cannot travel in a URL: it is sent as invalid UTF-8, which the
    # server decodes to U+FFFD, a different and harmless name. JSON carries it as is.
    in_query: bool


def _entries(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return client.get(url("entries", path=path), headers=headers)


def _stat(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return client.get(url("stat", path=path), headers=headers)


def _read(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return client.get(url("file", path=path), headers=headers)


def _write(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return client.put(url("file", path=path), content=b"pwned\n", headers=headers)


def _upload(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return upload(client, headers, path, [("pwned.txt", b"pwned\n")], overwrite=True)


def _mkdir(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return post_json(client, f"{API}/folders", {"path": path}, headers)


def _transfer(route: str, *, hostile: str) -> Send:
    def send(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
        body = {"source": "alice/data/file.txt", "destination": f"alice/data/{route}d.txt"}
        body[hostile] = path
        return post_json(client, f"{API}/{route}", {**body, "overwrite": True}, headers)

    return send


def _delete(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return client.delete(url("entries", path=path, recursive=True), headers=headers)


def _archive(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return client.get(url("archive", path=path), headers=headers)


def _search(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    # A piece of the marker: a text hit's snippet would carry the whole line.
    return client.get(url("search", q="3f9c", mode="text", path=path), headers=headers)


def _list_directory(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return graphql(client, LIST_DIRECTORY, headers, path=path)


def _read_file(client: TestClient, headers: dict[str, str], path: str) -> httpx.Response:
    return graphql(client, READ_FILE, headers, path=path)


REST_ROUTES = {
    "entries": Route(_entries, writes=False, in_query=True),
    "stat": Route(_stat, writes=False, in_query=True),
    "file-get": Route(_read, writes=False, in_query=True),
    "file-put": Route(_write, writes=True, in_query=True),
    "upload": Route(_upload, writes=True, in_query=True),
    "folders": Route(_mkdir, writes=True, in_query=False),
    "move-source": Route(_transfer("move", hostile="source"), writes=True, in_query=False),
    "move-destination": Route(
        _transfer("move", hostile="destination"), writes=True, in_query=False
    ),
    "copy-source": Route(_transfer("copy", hostile="source"), writes=True, in_query=False),
    "copy-destination": Route(
        _transfer("copy", hostile="destination"), writes=True, in_query=False
    ),
    "delete": Route(_delete, writes=True, in_query=True),
    "archive": Route(_archive, writes=False, in_query=True),
    "search": Route(_search, writes=False, in_query=True),
}
GRAPHQL_ROUTES = {
    "graphql-listDirectory": Route(_list_directory, writes=False, in_query=False),
    "graphql-readFile": Route(_read_file, writes=False, in_query=False),
}


def _is_utf8(path: str) -> bool:
    try:
        path.encode()
    except UnicodeEncodeError:
        return False
    return True


def _rest_problem(response: httpx.Response) -> str | None:
    if response.status_code not in REFUSALS:
        return f"answered {response.status_code}: {response.text[:200]}"
    try:
        error_of(response)
    except (AssertionError, ValueError) as exc:
        return f"error body not in the common shape ({exc}): {response.text[:200]}"
    return None


def _graphql_problem(response: httpx.Response) -> str | None:
    try:
        graphql_error_of(response)
    except (AssertionError, ValueError, KeyError) as exc:
        return f"not a GraphQL error ({exc}): {response.text[:200]}"
    return None


def _changes(
    before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]
) -> str | None:
    if after == before:
        return None
    changed = sorted(set(after.items()) ^ set(before.items()))
    return f"changed outside Alice's area: {changed[:5]}"


def _attack(
    client: TestClient,
    site: Site,
    route: Route,
    problem_of: Callable[[httpx.Response], str | None],
) -> None:
    inputs = [*CORPUS, *site.absolute_inputs]
    if route.in_query:
        inputs = [path for path in inputs if _is_utf8(path)]
    start = before = site.outside_alice()
    problems: list[str] = []
    for path in inputs:
        response = route.send(client, site.headers, path)
        found = [problem_of(response)]
        if SENTINEL in response.text or PASSWD_LINE in response.text:
            found.append("the answer shows a protected file's content")
        if route.writes:
            after = site.outside_alice()
            found.append(_changes(before, after))
            before = after
            leaked = site.alice_files_with_sentinel()
            found.append(
                f"protected content copied into Alice's area: {leaked}" if leaked else None
            )
        problems += [f"{path!r}: {problem}" for problem in found if problem is not None]
    overall = _changes(start, site.outside_alice())
    problems += [f"after the whole corpus: {overall}"] if overall is not None else []
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])


def test_corpus_is_large() -> None:
    assert len(CORPUS) >= 150


def test_symlink_traps_of_the_corpus_are_forbidden_not_missing(
    client: TestClient, site: Site
) -> None:
    # HOSTILE's 403 cases name traps of test_paths' tree; rebuilt here, each must be
    # refused as forbidden, or the corpus would only be testing missing files.
    # Without CAP_MKNOD there is no device: its two cases are then merely missing.
    no_device = set() if (site.alice_area / "chardev").exists() else NEEDS_DEVICE
    traps = [
        f"alice/{path}"
        for path, error in HOSTILE
        if error is PermissionDenied and path not in no_device
    ]
    answers = {path: _stat(client, site.headers, path).status_code for path in traps}
    assert {path: status for path, status in answers.items() if status != 403} == {}
    assert len(traps) > 30


@pytest.mark.parametrize("route", list(REST_ROUTES))
def test_hostile_paths_are_refused_by_rest_route(
    client: TestClient, site: Site, route: str
) -> None:
    _attack(client, site, REST_ROUTES[route], _rest_problem)


@pytest.mark.parametrize("route", list(GRAPHQL_ROUTES))
def test_hostile_paths_are_refused_by_graphql(client: TestClient, site: Site, route: str) -> None:
    _attack(client, site, GRAPHQL_ROUTES[route], _graphql_problem)


def test_protected_markers_are_really_in_place(site: Site) -> None:
    # The leak checks are only as good as the markers: prove they sit where aimed.
    assert SENTINEL in (site.files / "bob" / "data" / "secret.txt").read_text()
    assert SENTINEL in (site.data_dir / "outside" / "secret.txt").read_text()
    assert PASSWD_LINE in Path("/etc/passwd").read_text()
    assert (
        (site.alice_area / "data" / "to_bob" / "data" / "secret.txt")
        .read_text()
        .startswith("bob data")
    )
