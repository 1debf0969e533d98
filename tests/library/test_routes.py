"""The library API over HTTP: browse, read, edit, upload, organise, download, search, GraphQL."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas import db
from dtaas.api.app import create_app
from dtaas.config import Settings
from dtaas.library.access import KINDS
from dtaas.security.models import Role, User
from tests.factories import bearer, make_user
from tests.library.support import (
    API,
    LIST_DIRECTORY,
    READ_FILE,
    SharedApp,
    error_of,
    graphql,
    graphql_error_of,
    leftovers,
    post_json,
    snapshot,
    upload,
    url,
    zip_bytes,
)


@pytest.fixture
def settings(shared_app: SharedApp) -> Settings:
    """The settings of this module's one app (see SharedApp), with an empty data folder."""
    return shared_app.fresh_settings()


@pytest.fixture
def client(shared_app: SharedApp, session: Session) -> TestClient:
    """The client of this module's one app, answering with this test's session."""
    return shared_app.client_for(session)


Headers = dict[str, str]


@pytest.fixture
def area(files_root: Path, alice: User) -> Path:
    """Alice's area on disk."""
    return files_root / "alice"


@contextmanager
def client_with(settings: Settings, session: Session, **changes: Any) -> Iterator[TestClient]:
    """A client of a fresh app whose settings differ by ``changes``."""
    app = create_app(settings.model_copy(update=changes))
    app.dependency_overrides[db.get_session] = lambda: session
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [entry["name"] for entry in response.json()["entries"]]


def put(
    client: TestClient, headers: Headers, path: str, content: bytes, if_match: str | None = None
) -> httpx.Response:
    extra = {"If-Match": if_match} if if_match is not None else {}
    return client.put(url("file", path=path), content=content, headers={**headers, **extra})


def assert_error(response: httpx.Response, status: int, error_type: str) -> str:
    """Check the status and error type; returns the message."""
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["type"] == error_type, error
    return str(error["msg"])


# --- listing ---------------------------------------------------------------------------------


@pytest.fixture
def mixed(area: Path) -> Path:
    """alice/data/mixed: two folders and three files of known sizes and times."""
    folder = area / "data" / "mixed"
    folder.mkdir()
    for name in ("zeta", "Alpha"):
        (folder / name).mkdir()
    for name, size in (("b.txt", 3), ("A.csv", 10), ("c.md", 1)):
        (folder / name).write_bytes(b"x" * size)
    # Oldest first: c.md, zeta, A.csv, Alpha, b.txt.
    for age, name in enumerate(("b.txt", "Alpha", "A.csv", "zeta", "c.md")):
        moment = 1_700_000_000_000_000_000 - age * 60_000_000_000
        os.utime(folder / name, ns=(moment, moment))
    return folder


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["Alpha", "zeta", "A.csv", "b.txt", "c.md"]),
        ("type", ["Alpha", "zeta", "A.csv", "c.md", "b.txt"]),
        ("size", ["Alpha", "zeta", "c.md", "b.txt", "A.csv"]),
        ("mtime", ["c.md", "zeta", "A.csv", "Alpha", "b.txt"]),
    ],
)
def test_listing_sorts_by_key(
    client: TestClient, as_alice: Headers, mixed: Path, sort: str, expected: list[str]
) -> None:
    response = client.get(url("entries", path="alice/data/mixed", sort=sort), headers=as_alice)
    assert names(response) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("size", ["A.csv", "b.txt", "c.md", "zeta", "Alpha"]),
        ("mtime", ["b.txt", "Alpha", "A.csv", "zeta", "c.md"]),
    ],
)
def test_listing_sorts_descending(
    client: TestClient, as_alice: Headers, mixed: Path, sort: str, expected: list[str]
) -> None:
    query = url("entries", path="alice/data/mixed", sort=sort, descending=True)
    assert names(client.get(query, headers=as_alice)) == expected


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["zeta", "Alpha", "c.md", "b.txt", "A.csv"]),
        ("type", ["zeta", "Alpha", "b.txt", "c.md", "A.csv"]),
    ],
)
def test_descending_name_or_type_sort_keeps_folders_first(
    client: TestClient, as_alice: Headers, mixed: Path, sort: str, expected: list[str]
) -> None:
    # list_folder promises folders first when sorted by name or type, in either direction.
    query = url("entries", path="alice/data/mixed", sort=sort, descending=True)
    assert names(client.get(query, headers=as_alice)) == expected


def test_listing_pages_and_reports_the_total(
    client: TestClient, as_alice: Headers, mixed: Path
) -> None:
    response = client.get(
        url("entries", path="alice/data/mixed", offset=1, limit=2), headers=as_alice
    )
    body = response.json()
    assert names(response) == ["zeta", "A.csv"]
    assert (body["path"], body["total"], body["offset"], body["limit"]) == (
        "alice/data/mixed",
        5,
        1,
        2,
    )


def test_listing_entries_carry_path_type_size_and_kind(
    client: TestClient, as_alice: Headers, mixed: Path
) -> None:
    entries = client.get(url("entries", path="alice/data/mixed"), headers=as_alice).json()[
        "entries"
    ]
    by_name = {entry["name"]: entry for entry in entries}
    assert by_name["A.csv"]["path"] == "alice/data/mixed/A.csv"
    assert (by_name["A.csv"]["type"], by_name["A.csv"]["size"]) == ("file", 10)
    assert (by_name["zeta"]["type"], by_name["zeta"]["size"]) == ("folder", 0)
    assert {entry["kind"] for entry in entries} == {"data"}


def test_empty_path_lists_own_area_and_common(client: TestClient, as_alice: Headers) -> None:
    response = client.get(url("entries"), headers=as_alice)
    assert names(response) == ["alice", "common"]
    assert response.json()["total"] == 2


def test_area_root_lists_the_five_kinds(client: TestClient, as_alice: Headers) -> None:
    assert names(client.get(url("entries", path="alice"), headers=as_alice)) == sorted(KINDS)


def test_listing_a_file_is_conflict(client: TestClient, as_alice: Headers, mixed: Path) -> None:
    response = client.get(url("entries", path="alice/data/mixed/A.csv"), headers=as_alice)
    assert_error(response, 409, "conflict")


def test_listing_a_missing_folder_is_not_found(client: TestClient, as_alice: Headers) -> None:
    response = client.get(url("entries", path="alice/data/nope"), headers=as_alice)
    assert assert_error(response, 404, "not_found") == "'alice/data/nope' does not exist."


def test_asset_folders_show_their_description(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    models = area / "models"
    (models / "tank" / "sub").mkdir(parents=True)
    (models / "tank" / "description.md").write_text(
        "# Tank\n\n![badge](b.svg)\n\nA water tank\nwith a valve.\n\nSecond paragraph.\n"
    )
    (models / "tank" / "README.md").write_text("The long story.\n")
    (models / "tank" / "sub" / "README.md").write_text("Not an asset.\n")
    (models / "pump").mkdir()
    (models / "pump" / "README.md").write_text("<p>html</p>\nA pump.\n")
    (models / "plain").mkdir()
    entries = client.get(url("entries", path="alice/models"), headers=as_alice).json()["entries"]
    assert {entry["name"]: entry["description"] for entry in entries} == {
        "plain": None,
        "pump": "A pump.",
        "tank": "A water tank with a valve.",
    }
    inner = client.get(url("entries", path="alice/models/tank"), headers=as_alice).json()
    assert {entry["name"]: entry["description"] for entry in inner["entries"]} == {
        "sub": None,
        "README.md": None,
        "description.md": None,
    }
    detail = client.get(url("stat", path="alice/models/tank"), headers=as_alice).json()
    assert detail["description"] == "A water tank with a valve."


def test_hidden_work_files_are_never_listed(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    folder = area / "data" / "work"
    folder.mkdir()
    (folder / ".dtaas-0123abcd").write_text("half an upload")
    (folder / ".dtaas-staging").mkdir()
    (folder / ".dtaas-staging" / "inner.txt").write_text("half a zip")
    (folder / ".hidden").write_text("a user's own dotfile")
    (folder / "kept.txt").write_text("kept")
    assert names(client.get(url("entries", path="alice/data/work"), headers=as_alice)) == [
        ".hidden",
        "kept.txt",
    ]
    tree = graphql(client, LIST_DIRECTORY, as_alice, path="alice/data/work").json()
    blobs = tree["data"]["listDirectory"]["repository"]["tree"]["blobs"]["edges"]
    trees = tree["data"]["listDirectory"]["repository"]["tree"]["trees"]["edges"]
    assert [edge["node"]["name"] for edge in blobs] == [".hidden", "kept.txt"]
    assert trees == []
    hits = client.get(url("search", q="dtaas", path="alice/data"), headers=as_alice).json()
    assert hits["hits"] == []
    text_hits = client.get(url("search", q="half", mode="text"), headers=as_alice).json()
    assert text_hits["hits"] == []
    archive = client.get(url("archive", path="alice/data/work"), headers=as_alice)
    assert sorted(zipfile.ZipFile(io.BytesIO(archive.content)).namelist()) == [
        ".hidden",
        "kept.txt",
    ]


def test_hidden_work_file_names_are_not_addressable(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    # service.HIDDEN_PREFIX: "never listed, never addressable". A user who can name them
    # can read in-flight uploads and create files no listing will ever show.
    (area / "data" / ".dtaas-0123abcd").write_text("half an upload")
    read = client.get(url("stat", path="alice/data/.dtaas-0123abcd"), headers=as_alice)
    assert_error(read, 400, "bad_request")
    created = put(client, as_alice, "alice/data/.dtaas-mine", b"invisible")
    assert_error(created, 400, "bad_request")
    uploaded = upload(client, as_alice, "alice/data", [(".dtaas-sent", b"invisible")])
    assert_error(uploaded, 400, "bad_request")
    assert sorted(path.name for path in (area / "data").iterdir()) == [".dtaas-0123abcd"]


# --- stat and reading ------------------------------------------------------------------------


def test_stat_describes_a_file_with_its_etag(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "note.txt").write_text("hello world\n")
    detail = client.get(url("stat", path="alice/data/note.txt"), headers=as_alice).json()
    read = client.get(url("file", path="alice/data/note.txt"), headers=as_alice)
    assert detail["name"] == "note.txt"
    assert detail["path"] == "alice/data/note.txt"
    assert (detail["type"], detail["size"], detail["kind"]) == ("file", 12, "data")
    assert detail["media_type"] == "text/plain"
    assert detail["writable"] is True
    assert detail["etag"] == read.headers["etag"]


def test_stat_of_common_is_not_writable_for_a_user(
    client: TestClient, as_alice: Headers, files_root: Path
) -> None:
    (files_root / "common" / "tools" / "solver.txt").write_text("shared")
    detail = client.get(url("stat", path="common/tools/solver.txt"), headers=as_alice).json()
    assert (detail["path"], detail["kind"], detail["writable"]) == (
        "common/tools/solver.txt",
        "tools",
        False,
    )


def test_stat_of_a_missing_file_is_not_found(client: TestClient, as_alice: Headers) -> None:
    response = client.get(url("stat", path="alice/data/missing.txt"), headers=as_alice)
    assert_error(response, 404, "not_found")


def test_file_is_read_whole_with_etag_and_no_cache(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "note.txt").write_bytes(b"0123456789")
    response = client.get(url("file", path="alice/data/note.txt"), headers=as_alice)
    assert response.status_code == 200
    assert response.content == b"0123456789"
    assert response.headers["etag"].startswith('"')
    assert response.headers["cache-control"] == "no-cache"


def test_range_read_answers_206_with_content_range(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "note.txt").write_bytes(b"0123456789")
    response = client.get(
        url("file", path="alice/data/note.txt"), headers={**as_alice, "Range": "bytes=2-5"}
    )
    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 2-5/10"
    assert response.content == b"2345"


def test_reading_a_folder_is_conflict(client: TestClient, as_alice: Headers) -> None:
    response = client.get(url("file", path="alice/data"), headers=as_alice)
    assert_error(response, 409, "conflict")


# --- editing with ETag and If-Match ----------------------------------------------------------


def test_new_file_is_created_without_if_match_and_returns_its_etag(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    response = put(client, as_alice, "alice/data/new.txt", b"first\n")
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == response.json()["etag"]
    assert (area / "data" / "new.txt").read_bytes() == b"first\n"
    assert leftovers(area) == []


def test_replacing_without_if_match_is_428(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    put(client, as_alice, "alice/data/note.txt", b"first\n")
    response = put(client, as_alice, "alice/data/note.txt", b"second\n")
    assert "If-Match" in assert_error(response, 428, "precondition_required")
    assert (area / "data" / "note.txt").read_bytes() == b"first\n"


def test_replacing_with_a_stale_etag_is_412(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    first = put(client, as_alice, "alice/data/note.txt", b"first\n").headers["etag"]
    second = put(client, as_alice, "alice/data/note.txt", b"second\n", if_match=first)
    assert second.status_code == 200
    stale = put(client, as_alice, "alice/data/note.txt", b"third\n", if_match=first)
    assert "changed since you read it" in assert_error(stale, 412, "precondition_failed")
    assert (area / "data" / "note.txt").read_bytes() == b"second\n"


def test_replacing_with_the_current_etag_succeeds_with_a_new_etag(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    put(client, as_alice, "alice/data/note.txt", b"first\n")
    current = client.get(url("file", path="alice/data/note.txt"), headers=as_alice)
    response = put(
        client, as_alice, "alice/data/note.txt", b"second\n", if_match=current.headers["etag"]
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == response.json()["etag"] != current.headers["etag"]
    assert response.json()["size"] == 7
    assert (area / "data" / "note.txt").read_bytes() == b"second\n"
    assert leftovers(area) == []


def test_if_match_on_a_missing_file_is_412(client: TestClient, as_alice: Headers) -> None:
    response = put(client, as_alice, "alice/data/gone.txt", b"x", if_match='"1-2-3"')
    assert_error(response, 412, "precondition_failed")


def test_non_utf8_edit_is_422(client: TestClient, as_alice: Headers, area: Path) -> None:
    response = put(client, as_alice, "alice/data/binary.txt", b"ok \xff\xfe not text")
    assert "byte 3 is invalid" in assert_error(response, 422, "invalid_input")
    assert not (area / "data" / "binary.txt").exists()


def test_writing_text_onto_a_folder_is_conflict(client: TestClient, as_alice: Headers) -> None:
    response = put(client, as_alice, "alice/data", b"x", if_match="*")
    assert_error(response, 409, "conflict")


# --- uploads ---------------------------------------------------------------------------------


def test_several_files_upload_in_one_request(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    files = [("a.csv", b"t,v\n0,1\n"), ("b.bin", bytes(range(256))), ("c.txt", b"")]
    response = upload(client, as_alice, "alice/data", files)
    assert response.status_code == 201, response.text
    assert [entry["path"] for entry in response.json()["files"]] == [
        "alice/data/a.csv",
        "alice/data/b.bin",
        "alice/data/c.txt",
    ]
    assert response.json()["extracted"] == []
    for name, content in files:
        assert (area / "data" / name).read_bytes() == content
    assert leftovers(area) == []


def test_upload_over_an_existing_file_needs_overwrite(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "a.csv").write_bytes(b"old")
    refused = upload(client, as_alice, "alice/data", [("a.csv", b"new")])
    assert "overwrite" in assert_error(refused, 409, "conflict")
    assert (area / "data" / "a.csv").read_bytes() == b"old"
    assert leftovers(area) == []
    allowed = upload(client, as_alice, "alice/data", [("a.csv", b"new")], overwrite=True)
    assert allowed.status_code == 201, allowed.text
    assert (area / "data" / "a.csv").read_bytes() == b"new"
    assert leftovers(area) == []


def test_upload_into_a_missing_folder_is_not_found(client: TestClient, as_alice: Headers) -> None:
    response = upload(client, as_alice, "alice/data/nope", [("a.csv", b"x")])
    assert_error(response, 404, "not_found")


def test_upload_without_multipart_is_bad_request(client: TestClient, as_alice: Headers) -> None:
    response = client.post(url("upload", path="alice/data"), content=b"raw", headers=as_alice)
    assert_error(response, 400, "bad_request")


def test_zip_is_extracted_into_a_folder(client: TestClient, as_alice: Headers, area: Path) -> None:
    archive = zip_bytes({"sub/": b"", "a.txt": b"alpha", "sub/b.txt": b"beta", "sub/c/d.txt": b"d"})
    response = upload(client, as_alice, "alice/models", [("bundle.zip", archive)], extract=True)
    assert response.status_code == 201, response.text
    assert response.json() == {"files": [], "extracted": ["alice/models/bundle"]}
    bundle = area / "models" / "bundle"
    assert (bundle / "a.txt").read_bytes() == b"alpha"
    assert (bundle / "sub" / "b.txt").read_bytes() == b"beta"
    assert (bundle / "sub" / "c" / "d.txt").read_bytes() == b"d"
    assert not (area / "models" / "bundle.zip").exists()
    assert leftovers(area) == []


def test_zip_is_stored_as_is_without_extract(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    archive = zip_bytes({"a.txt": b"alpha"})
    response = upload(client, as_alice, "alice/models", [("bundle.zip", archive)])
    assert response.status_code == 201, response.text
    assert (area / "models" / "bundle.zip").read_bytes() == archive
    assert not (area / "models" / "bundle").exists()


def _zip_with_symlink() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def _zip_bomb() -> bytes:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros.bin", "w") as member,
    ):
        block = bytes(1024 * 1024)
        for _ in range(50):
            member.write(block)
    return buffer.getvalue()


# case: (build the zip, status, error type, words of the message)
UNSAFE_ZIPS: dict[str, tuple[Callable[[], bytes], int, str, str]] = {
    "zip-slip": (
        lambda: zip_bytes({"ok.txt": b"fine", "../x.txt": b"escaped"}),
        422,
        "invalid_input",
        "'../x.txt' is refused",
    ),
    "absolute-member": (
        lambda: zip_bytes({"ok.txt": b"fine", "/x.txt": b"escaped"}),
        422,
        "invalid_input",
        "'/x.txt' is refused",
    ),
    "symlink-member": (_zip_with_symlink, 422, "invalid_input", "symbolic link"),
    "zip-bomb": (_zip_bomb, 413, "payload_too_large", "like a zip bomb"),
    "too-many-entries": (
        lambda: zip_bytes({f"f{index}.txt": b"x" for index in range(6)}),
        413,
        "payload_too_large",
        "6 entries; at most 5",
    ),
    "damaged": (lambda: b"PK\x03\x04 this is not a zip", 422, "invalid_input", "damaged"),
}


@pytest.mark.parametrize("case", list(UNSAFE_ZIPS))
def test_unsafe_zip_is_refused_and_leaves_nothing(
    settings: Settings,
    session: Session,
    as_alice: Headers,
    area: Path,
    files_root: Path,
    case: str,
) -> None:
    build, status, error_type, words = UNSAFE_ZIPS[case]
    before = snapshot(files_root)
    with client_with(settings, session, zip_max_entries=5) as client:
        response = upload(client, as_alice, "alice/models", [("bundle.zip", build())], extract=True)
    assert words in assert_error(response, status, error_type)
    # No partial folder, no hidden staging folder or upload file, nothing that escaped.
    assert snapshot(files_root) == before
    assert leftovers(area) == []


def test_upload_over_the_limit_is_413_and_leaves_nothing(
    settings: Settings, session: Session, as_alice: Headers, area: Path, files_root: Path
) -> None:
    before = snapshot(files_root)
    with client_with(settings, session, upload_max_bytes=64 * 1024) as client:
        response = upload(client, as_alice, "alice/data", [("big.bin", bytes(100 * 1024))])
    assert_error(response, 413, "payload_too_large")
    assert snapshot(files_root) == before
    assert leftovers(area) == []


def test_streamed_upload_over_the_limit_is_413_and_leaves_nothing(
    settings: Settings, session: Session, as_alice: Headers, area: Path, files_root: Path
) -> None:
    boundary = "limit-test-boundary"

    def body() -> Iterator[bytes]:
        # No Content-Length: the limit is found while the body streams in.
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        for _ in range(10):
            yield bytes(16 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    before = snapshot(files_root)
    headers = {**as_alice, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    with client_with(settings, session, upload_max_bytes=64 * 1024) as client:
        response = client.post(url("upload", path="alice/data"), content=body(), headers=headers)
    assert_error(response, 413, "payload_too_large")
    assert snapshot(files_root) == before
    assert leftovers(area) == []


# --- folders, move, copy, delete -------------------------------------------------------------


def test_make_folder_then_again_is_conflict(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    made = client.post(f"{API}/folders", json={"path": "alice/data/new"}, headers=as_alice)
    assert made.status_code == 201, made.text
    assert (made.json()["path"], made.json()["type"]) == ("alice/data/new", "folder")
    assert (area / "data" / "new").is_dir()
    again = client.post(f"{API}/folders", json={"path": "alice/data/new"}, headers=as_alice)
    assert "already exists" in assert_error(again, 409, "conflict")


def test_make_folder_in_a_missing_folder_is_not_found(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    made = client.post(f"{API}/folders", json={"path": "alice/data/a/b/c"}, headers=as_alice)
    assert "create it first" in assert_error(made, 404, "not_found")
    assert not (area / "data" / "a").exists()


def test_make_folder_over_a_file_is_conflict(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "taken").write_text("x")
    response = client.post(f"{API}/folders", json={"path": "alice/data/taken"}, headers=as_alice)
    assert_error(response, 409, "conflict")


def move(
    client: TestClient, headers: Headers, source: str, destination: str, **extra: Any
) -> httpx.Response:
    body = {"source": source, "destination": destination, **extra}
    return client.post(f"{API}/move", json=body, headers=headers)


def copy(
    client: TestClient, headers: Headers, source: str, destination: str, **extra: Any
) -> httpx.Response:
    body = {"source": source, "destination": destination, **extra}
    return client.post(f"{API}/copy", json=body, headers=headers)


def test_rename_a_file(client: TestClient, as_alice: Headers, area: Path) -> None:
    (area / "data" / "old.txt").write_text("content")
    response = move(client, as_alice, "alice/data/old.txt", "alice/data/new.txt")
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "alice/data/new.txt"
    assert not (area / "data" / "old.txt").exists()
    assert (area / "data" / "new.txt").read_text() == "content"


def test_move_a_folder_to_another_kind(client: TestClient, as_alice: Headers, area: Path) -> None:
    (area / "data" / "tank").mkdir()
    (area / "data" / "tank" / "model.mo").write_text("model Tank end Tank;")
    response = move(client, as_alice, "alice/data/tank", "alice/models/tank")
    assert response.status_code == 200, response.text
    assert response.json()["kind"] == "models"
    assert (area / "models" / "tank" / "model.mo").read_text() == "model Tank end Tank;"
    assert not (area / "data" / "tank").exists()


def test_move_onto_an_existing_file_needs_overwrite(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "a.txt").write_text("a")
    (area / "data" / "b.txt").write_text("b")
    refused = move(client, as_alice, "alice/data/a.txt", "alice/data/b.txt")
    assert_error(refused, 409, "conflict")
    assert (area / "data" / "b.txt").read_text() == "b"
    allowed = move(client, as_alice, "alice/data/a.txt", "alice/data/b.txt", overwrite=True)
    assert allowed.status_code == 200, allowed.text
    assert (area / "data" / "b.txt").read_text() == "a"
    assert not (area / "data" / "a.txt").exists()


def test_move_a_folder_into_itself_is_conflict(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "outer").mkdir()
    response = move(client, as_alice, "alice/data/outer", "alice/data/outer/inner")
    assert "into itself" in assert_error(response, 409, "conflict")
    assert (area / "data" / "outer").is_dir()


def test_move_of_a_missing_source_is_not_found(client: TestClient, as_alice: Headers) -> None:
    response = move(client, as_alice, "alice/data/none.txt", "alice/data/some.txt")
    assert_error(response, 404, "not_found")


def test_copy_from_common_into_own_library(
    client: TestClient, as_alice: Headers, area: Path, files_root: Path
) -> None:
    shared = files_root / "common" / "models" / "tank"
    (shared / "lib").mkdir(parents=True)
    (shared / "description.md").write_text("A tank.\n")
    (shared / "lib" / "tank.fmu").write_bytes(b"\x00fmu")
    response = copy(client, as_alice, "common/models/tank", "alice/models/tank")
    assert response.status_code == 201, response.text
    assert (response.json()["path"], response.json()["description"]) == (
        "alice/models/tank",
        "A tank.",
    )
    assert (area / "models" / "tank" / "lib" / "tank.fmu").read_bytes() == b"\x00fmu"
    assert (shared / "lib" / "tank.fmu").read_bytes() == b"\x00fmu"
    again = copy(client, as_alice, "common/models/tank", "alice/models/tank")
    assert_error(again, 409, "conflict")
    assert leftovers(area) == []


def test_copy_a_file_over_another_with_overwrite(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "a.txt").write_text("a")
    (area / "data" / "b.txt").write_text("b")
    response = copy(client, as_alice, "alice/data/a.txt", "alice/data/b.txt", overwrite=True)
    assert response.status_code == 201, response.text
    assert (area / "data" / "a.txt").read_text() == (area / "data" / "b.txt").read_text() == "a"


def test_copy_of_a_folder_with_a_fifo_skips_it(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    # A FIFO made in a workspace is neither listed nor zipped; copying its folder must
    # not end in a 500 (shutil.copytree refuses special files with shutil.Error).
    (area / "data" / "with_pipe").mkdir()
    (area / "data" / "with_pipe" / "a.txt").write_text("a")
    os.mkfifo(area / "data" / "with_pipe" / "pipe")
    response = copy(client, as_alice, "alice/data/with_pipe", "alice/data/copied")
    assert response.status_code == 201, response.text
    assert sorted(path.name for path in (area / "data" / "copied").iterdir()) == ["a.txt"]
    assert leftovers(area) == []


def delete(client: TestClient, headers: Headers, path: str, **params: bool) -> httpx.Response:
    return client.delete(url("entries", path=path, **params), headers=headers)


def test_delete_a_file(client: TestClient, as_alice: Headers, area: Path) -> None:
    (area / "data" / "a.txt").write_text("a")
    response = delete(client, as_alice, "alice/data/a.txt")
    assert response.status_code == 204
    assert not (area / "data" / "a.txt").exists()


def test_delete_a_non_empty_folder_needs_recursive(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "full" / "deep").mkdir(parents=True)
    (area / "data" / "full" / "deep" / "a.txt").write_text("a")
    refused = delete(client, as_alice, "alice/data/full")
    assert "recursively" in assert_error(refused, 409, "conflict")
    assert (area / "data" / "full" / "deep" / "a.txt").exists()
    allowed = delete(client, as_alice, "alice/data/full", recursive=True)
    assert allowed.status_code == 204
    assert not (area / "data" / "full").exists()
    assert leftovers(area) == []


def test_delete_an_empty_folder_needs_no_recursive(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "empty").mkdir()
    assert delete(client, as_alice, "alice/data/empty").status_code == 204
    assert not (area / "data" / "empty").exists()


def test_delete_of_a_missing_entry_is_not_found(client: TestClient, as_alice: Headers) -> None:
    assert_error(delete(client, as_alice, "alice/data/none.txt"), 404, "not_found")


LAYOUT = ["alice", "alice/", *(f"alice/{kind}" for kind in KINDS), "alice/./models/"]


@pytest.mark.parametrize("path", LAYOUT)
def test_layout_folders_cannot_be_deleted(
    client: TestClient, as_alice: Headers, area: Path, path: str
) -> None:
    response = delete(client, as_alice, path, recursive=True)
    assert "library layout" in assert_error(response, 409, "conflict")
    assert sorted(child.name for child in area.iterdir()) == sorted(KINDS)


@pytest.mark.parametrize("path", LAYOUT)
def test_layout_folders_cannot_be_moved(
    client: TestClient, as_alice: Headers, area: Path, path: str
) -> None:
    response = move(client, as_alice, path, "alice/data/moved")
    assert "library layout" in assert_error(response, 409, "conflict")
    assert sorted(child.name for child in area.iterdir()) == sorted(KINDS)


def test_nothing_can_be_moved_onto_a_layout_folder(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "x").mkdir()
    response = move(client, as_alice, "alice/data/x", "alice/tools", overwrite=True)
    assert_error(response, 409, "conflict")


def test_common_layout_cannot_be_deleted_even_by_an_admin(
    client: TestClient, session: Session, settings: Settings, files_root: Path
) -> None:
    admin = make_user(session, settings, username="site-admin", role=Role.ADMIN)
    response = delete(client, bearer(session, settings, admin), "common/models", recursive=True)
    assert_error(response, 409, "conflict")
    assert (files_root / "common" / "models").is_dir()


@pytest.mark.parametrize("operation", ["delete", "move"])
def test_layout_folders_are_protected_through_a_symlink(
    client: TestClient, as_alice: Headers, area: Path, operation: str
) -> None:
    # A link to the area root (made in a workspace, say) must not open a side door to
    # the kind folders: the check has to look at the real path, not at the words.
    (area / "functions" / "back").symlink_to("..")
    (area / "models" / "keep.txt").write_text("keep")
    if operation == "delete":
        response = delete(client, as_alice, "alice/functions/back/models", recursive=True)
    else:
        response = move(client, as_alice, "alice/functions/back/models", "alice/data/models")
    assert_error(response, 409, "conflict")
    assert (area / "models" / "keep.txt").read_text() == "keep"


def test_deleting_a_symlink_removes_the_link_not_its_target(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "models" / "tank").mkdir()
    (area / "models" / "tank" / "tank.fmu").write_text("fmu")
    (area / "data" / "tank_link").symlink_to("../models/tank")
    (area / "data" / "fmu_link").symlink_to("../models/tank/tank.fmu")
    assert delete(client, as_alice, "alice/data/tank_link", recursive=True).status_code == 204
    assert delete(client, as_alice, "alice/data/fmu_link").status_code == 204
    assert not (area / "data" / "tank_link").is_symlink()
    assert not (area / "data" / "fmu_link").is_symlink()
    assert (area / "models" / "tank" / "tank.fmu").read_text() == "fmu"


# --- archive ---------------------------------------------------------------------------------


def test_archive_contains_the_folders_files(
    client: TestClient, as_alice: Headers, area: Path, files_root: Path
) -> None:
    tank = area / "models" / "tank"
    (tank / "lib").mkdir(parents=True)
    (tank / "README.md").write_text("# Tank\n")
    (tank / "lib" / "tank.fmu").write_bytes(bytes(range(256)) * 40)
    (tank / "inside_link.md").symlink_to("README.md")
    (tank / "outside_link").symlink_to(files_root / "common")
    (tank / ".dtaas-0123").write_text("work in progress")
    response = client.get(url("archive", path="alice/models/tank"), headers=as_alice)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == 'attachment; filename="tank.zip"'
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert sorted(archive.namelist()) == ["README.md", "inside_link.md", "lib/tank.fmu"]
    assert archive.read("lib/tank.fmu") == bytes(range(256)) * 40
    assert archive.read("inside_link.md") == b"# Tank\n"


def test_archive_of_a_file_is_not_found(client: TestClient, as_alice: Headers, area: Path) -> None:
    (area / "data" / "a.txt").write_text("a")
    response = client.get(url("archive", path="alice/data/a.txt"), headers=as_alice)
    assert_error(response, 404, "not_found")


# --- search ----------------------------------------------------------------------------------


@pytest.fixture
def searchable(area: Path, files_root: Path) -> None:
    (area / "models" / "Tank").mkdir()
    (area / "models" / "Tank" / "tank.fmu").write_bytes(b"\x00binary")
    (area / "models" / "Tank" / "notes.md").write_text("# Notes\nThe valve opens\nat level 3\n")
    (area / "models" / "pump.fmu").write_bytes(b"\x00binary")
    (files_root / "common" / "tools" / "tank-solver.txt").write_text("solves the VALVE\n")


def hits_of(response: httpx.Response) -> list[tuple[str, str, int | None]]:
    assert response.status_code == 200, response.text
    return [(hit["path"], hit["type"], hit["line"]) for hit in response.json()["hits"]]


def test_search_by_name_is_a_case_insensitive_substring(
    client: TestClient, as_alice: Headers, searchable: None
) -> None:
    response = client.get(url("search", q="TANK"), headers=as_alice)
    assert sorted(hits_of(response)) == [
        ("alice/models/Tank", "folder", None),
        ("alice/models/Tank/tank.fmu", "file", None),
        ("common/tools/tank-solver.txt", "file", None),
    ]
    assert response.json()["truncated"] is False


def test_search_by_glob(client: TestClient, as_alice: Headers, searchable: None) -> None:
    response = client.get(url("search", q="*.fmu"), headers=as_alice)
    assert sorted(path for path, _, _ in hits_of(response)) == [
        "alice/models/Tank/tank.fmu",
        "alice/models/pump.fmu",
    ]


def test_search_by_text_gives_line_numbers(
    client: TestClient, as_alice: Headers, searchable: None
) -> None:
    response = client.get(url("search", q="valve", mode="text"), headers=as_alice)
    assert sorted(hits_of(response)) == [
        ("alice/models/Tank/notes.md", "file", 2),
        ("common/tools/tank-solver.txt", "file", 1),
    ]
    snippets = {hit["path"]: hit["snippet"] for hit in response.json()["hits"]}
    assert snippets["alice/models/Tank/notes.md"] == "The valve opens"


def test_search_inside_one_folder(client: TestClient, as_alice: Headers, searchable: None) -> None:
    response = client.get(url("search", q="tank", path="common/tools"), headers=as_alice)
    assert hits_of(response) == [("common/tools/tank-solver.txt", "file", None)]


def test_search_is_truncated_at_the_limit(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    for index in range(5):
        (area / "data" / f"match-{index}.txt").write_text("x")
    response = client.get(url("search", q="match", limit=2), headers=as_alice)
    assert len(hits_of(response)) == 2
    assert response.json()["truncated"] is True


def test_text_search_is_truncated_when_one_file_has_more_hits_than_the_limit(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "only").mkdir()
    (area / "data" / "only" / "log.txt").write_text("needle\n" * 5)
    response = client.get(
        url("search", q="needle", mode="text", path="alice/data/only", limit=2), headers=as_alice
    )
    assert [line for _, _, line in hits_of(response)] == [1, 2]
    assert response.json()["truncated"] is True


def _release_readers(fifo: Path) -> None:
    """Open and close the write end, so a reader blocked on ``fifo`` sees end-of-file."""
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading, nothing to release
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


def test_text_search_does_not_hang_on_a_fifo(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    # A FIFO made in a workspace must not block a server thread until some writer
    # appears: the search's own deadline is only checked between files.
    pipe = area / "data" / "pipe"
    os.mkfifo(pipe)
    (area / "data" / "note.txt").write_text("needle\n")
    answers: list[httpx.Response] = []
    query = url("search", q="needle", mode="text", path="alice/data")
    request = threading.Thread(target=lambda: answers.append(client.get(query, headers=as_alice)))
    request.start()
    request.join(timeout=10)
    hung = request.is_alive()
    _release_readers(pipe)
    request.join(timeout=10)
    assert not hung, "the text search blocked reading the FIFO"
    assert hits_of(answers[0]) == [("alice/data/note.txt", "file", 1)]


def test_blank_search_is_invalid_input(client: TestClient, as_alice: Headers) -> None:
    response = client.get(url("search", q="   "), headers=as_alice)
    assert "search for" in assert_error(response, 422, "invalid_input")


def test_search_without_a_query_is_a_validation_error(
    client: TestClient, as_alice: Headers
) -> None:
    response = client.get(url("search", q=""), headers=as_alice)
    assert_error(response, 422, "string_too_short")


# --- GraphQL, in the reference's shapes ------------------------------------------------------


def test_graphql_list_directory_answers_in_the_reference_shape(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    shape = area / "data" / "shape"
    (shape / "sub").mkdir(parents=True)
    (shape / "b.csv").write_text("t,v\n")
    (shape / "a.txt").write_text("a")
    (shape / "ln").symlink_to("sub")  # lstat, as the reference: a link is a blob
    # The reference client's query, with the path inline rather than as a variable.
    query = (
        '{ listDirectory(path: "alice/data/shape") { repository { tree { '
        "blobs { edges { node { name type } } } trees { edges { node { name type } } } "
        "} } } }"
    )
    response = post_json(client, "/lib", {"query": query}, as_alice)
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "listDirectory": {
                "repository": {
                    "tree": {
                        "blobs": {
                            "edges": [
                                {"node": {"name": "a.txt", "type": "blob"}},
                                {"node": {"name": "b.csv", "type": "blob"}},
                                {"node": {"name": "ln", "type": "blob"}},
                            ]
                        },
                        "trees": {"edges": [{"node": {"name": "sub", "type": "tree"}}]},
                    }
                }
            }
        }
    }


def test_graphql_list_directory_of_the_empty_path_lists_the_areas(
    client: TestClient, as_alice: Headers
) -> None:
    response = graphql(client, LIST_DIRECTORY, as_alice, path="")
    assert response.json() == {
        "data": {
            "listDirectory": {
                "repository": {
                    "tree": {
                        "blobs": {"edges": []},
                        "trees": {
                            "edges": [
                                {"node": {"name": "alice", "type": "tree"}},
                                {"node": {"name": "common", "type": "tree"}},
                            ]
                        },
                    }
                }
            }
        }
    }


def test_graphql_read_file_answers_in_the_reference_shape(
    client: TestClient, as_alice: Headers, area: Path
) -> None:
    (area / "data" / "note.txt").write_text("\n  hello\nworld  \n\n")
    response = graphql(client, READ_FILE, as_alice, path="alice/data/note.txt")
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "readFile": {
                "repository": {
                    "blobs": {
                        "nodes": [
                            {
                                "name": "note.txt",
                                "rawBlob": "hello\nworld",
                                "rawTextBlob": "hello\nworld",
                            }
                        ]
                    }
                }
            }
        }
    }


def test_graphql_read_file_of_a_missing_file_is_an_error(
    client: TestClient, as_alice: Headers
) -> None:
    response = graphql(client, READ_FILE, as_alice, path="alice/data/missing.txt")
    assert graphql_error_of(response) == "'alice/data/missing.txt' does not exist."
    assert response.json()["errors"][0]["path"] == ["readFile"]


def test_graphql_read_file_of_a_folder_is_the_reference_error(
    client: TestClient, as_alice: Headers
) -> None:
    response = graphql(client, READ_FILE, as_alice, path="alice/data")
    assert graphql_error_of(response) == "Error reading file"


def test_graphql_without_credentials_is_401(client: TestClient) -> None:
    response = graphql(client, READ_FILE, {}, path="alice/data/note.txt")
    assert_error(response, 401, "not_authenticated")
