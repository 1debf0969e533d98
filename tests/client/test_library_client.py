"""The client's library methods against a real server: models back, errors rebuilt, streams."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtaas.client import Client
from dtaas.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    PreconditionRequired,
)
from dtaas.library.schemas import EntryDetail, EntryType, Listing, SearchResult, Uploaded
from tests.live import LiveServer

MiB = 1024 * 1024
# library.service.delete tests a folder for content with an unclosed os.scandir iterator;
# drop this once it uses `with os.scandir(...)`.
DOT_DOT = (
    "The path contains '..'; parent references are not allowed, even when they would stay "
    "inside. Give the path from the library root."
)


@pytest.fixture
def alice(live: LiveServer) -> Iterator[Client]:
    with live.client_for("alice") as client:
        yield client


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty folder for this test's local files (``tmp_path`` also holds the site)."""
    folder = tmp_path / "local"
    folder.mkdir()
    return folder


def write_random(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` random bytes, a MiB at a time; returns their sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for start in range(0, size, MiB):
            chunk = os.urandom(min(MiB, size - start))
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


class Recorder:
    """A progress callback that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


# --- listing and reading ----------------------------------------------------------------


def test_list_entries_of_the_root_shows_your_library_and_common(alice: Client) -> None:
    listing = alice.list_entries()

    assert isinstance(listing, Listing)
    assert [(e.path, e.type) for e in listing.entries] == [
        ("alice", EntryType.FOLDER),
        ("common", EntryType.FOLDER),
    ]


def test_list_entries_sorts_and_pages(alice: Client) -> None:
    for name, text in [("b.txt", "bb"), ("a.txt", "aaa"), ("c.txt", "c")]:
        alice.write_text(path=f"alice/data/{name}", text=text)

    by_size = alice.list_entries(path="alice/data", sort="size", descending=True)
    page = alice.list_entries(path="alice/data", offset=1, limit=1)

    assert [e.name for e in by_size.entries] == ["a.txt", "b.txt", "c.txt"]
    assert [e.name for e in page.entries] == ["b.txt"]
    assert (page.total, page.offset, page.limit) == (3, 1, 1)


def test_list_entries_of_a_file_is_conflict(alice: Client) -> None:
    alice.write_text(path="alice/data/a.txt", text="a")

    with pytest.raises(Conflict) as caught:
        alice.list_entries(path="alice/data/a.txt")

    assert caught.value.message == "alice/data/a.txt is a file, not a folder."


def test_stat_returns_the_detail_with_an_etag(alice: Client) -> None:
    alice.write_text(path="alice/data/a.txt", text="hello")

    detail = alice.stat(path="alice/data/a.txt")

    assert isinstance(detail, EntryDetail)
    assert (detail.path, detail.type, detail.size, detail.kind) == (
        "alice/data/a.txt",
        EntryType.FILE,
        5,
        "data",
    )
    assert detail.etag.startswith('"')
    assert detail.writable


def test_stat_of_a_missing_path_is_not_found(alice: Client) -> None:
    with pytest.raises(NotFound) as caught:
        alice.stat(path="alice/data/nope.txt")

    assert caught.value.message == "'alice/data/nope.txt' does not exist."


def test_read_bytes_returns_the_exact_bytes(alice: Client, workdir: Path) -> None:
    local = workdir / "blob.bin"
    local.write_bytes(bytes(range(256)) * 4)
    alice.upload(folder="alice/data", files=[local])

    assert alice.read_bytes(path="alice/data/blob.bin") == bytes(range(256)) * 4


def test_read_bytes_of_a_folder_is_conflict(alice: Client) -> None:
    with pytest.raises(Conflict) as caught:
        alice.read_bytes(path="alice/data")

    assert caught.value.message == "alice/data is a folder; list it, or download it as a zip."


def test_a_path_with_dot_dot_is_bad_request(alice: Client) -> None:
    with pytest.raises(BadRequest) as caught:
        alice.read_bytes(path="alice/data/../../bob/secret.txt")

    assert caught.value.message == DOT_DOT


def test_another_users_library_is_permission_denied(alice: Client) -> None:
    with pytest.raises(PermissionDenied) as caught:
        alice.list_entries(path="bob/data")

    assert caught.value.message == (
        "'bob' is not your library: you can reach alice/... and common/..."
    )


def test_stream_to_writes_into_an_open_file(alice: Client) -> None:
    alice.write_text(path="alice/data/a.txt", text="streamed")
    sink = io.BytesIO()

    size = alice.stream_to(path="alice/data/a.txt", sink=sink)

    assert (size, sink.getvalue()) == (8, b"streamed")


# --- writing text -----------------------------------------------------------------------


def test_write_text_creates_then_replaces_with_the_etag_read(alice: Client) -> None:
    created = alice.write_text(path="alice/data/notes.md", text="# v1\n", if_match="*")
    replaced = alice.write_text(path="alice/data/notes.md", text="# v2 ü\n", if_match=created.etag)

    assert isinstance(replaced, EntryDetail)
    assert replaced.etag != created.etag
    assert alice.read_bytes(path="alice/data/notes.md") == "# v2 ü\n".encode()


def test_write_text_with_a_stale_if_match_is_precondition_failed(alice: Client) -> None:
    first = alice.write_text(path="alice/data/notes.md", text="v1")
    alice.write_text(path="alice/data/notes.md", text="v2 by another tab", if_match=first.etag)

    with pytest.raises(PreconditionFailed) as caught:
        alice.write_text(path="alice/data/notes.md", text="v2 by me", if_match=first.etag)

    assert caught.value.message == (
        "alice/data/notes.md was changed since you read it; reload it, reapply your edit "
        "and save again."
    )
    assert alice.read_bytes(path="alice/data/notes.md") == b"v2 by another tab"


def test_write_text_replacing_without_if_match_is_precondition_required(alice: Client) -> None:
    alice.write_text(path="alice/data/notes.md", text="v1")

    with pytest.raises(PreconditionRequired) as caught:
        alice.write_text(path="alice/data/notes.md", text="v2")

    assert caught.value.message == (
        "alice/data/notes.md exists: send If-Match with the ETag you read, so a newer "
        "version is not overwritten."
    )


# --- downloads --------------------------------------------------------------------------


def test_download_streams_a_file_to_its_destination_with_progress(
    alice: Client, workdir: Path
) -> None:
    local = workdir / "big.bin"
    digest = write_random(local, 3 * MiB + 7)
    alice.upload(folder="alice/data", files=[local])
    progress = Recorder()
    target = workdir / "back.bin"

    result = alice.download(path="alice/data/big.bin", destination=target, progress=progress)

    assert result == target
    assert sha256_of(target) == digest
    assert progress.calls[0] == (0, 3 * MiB + 7)
    assert progress.calls[-1] == (3 * MiB + 7, 3 * MiB + 7)
    assert [done for done, _ in progress.calls] == sorted(done for done, _ in progress.calls)
    assert sorted(p.name for p in workdir.iterdir()) == ["back.bin", "big.bin"]


def test_download_of_a_folder_is_a_zip_of_its_members(alice: Client, workdir: Path) -> None:
    alice.make_folder(path="alice/models/tank")
    alice.make_folder(path="alice/models/tank/parts")
    alice.write_text(path="alice/models/tank/model.json", text='{"volume": 2}')
    alice.write_text(path="alice/models/tank/parts/valve.txt", text="valve")
    progress = Recorder()

    target = alice.download(
        path="alice/models/tank", destination=workdir / "tank.zip", progress=progress
    )

    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == ["model.json", "parts/valve.txt"]
        assert archive.read("parts/valve.txt") == b"valve"
    assert {total for _, total in progress.calls} == {None}  # built while sent: size unknown


def test_download_that_fails_leaves_no_file_behind(alice: Client, workdir: Path) -> None:
    target = workdir / "missing.txt"

    with pytest.raises(NotFound):
        alice.download(path="alice/data/missing.txt", destination=target)

    assert list(workdir.iterdir()) == []


def test_download_onto_a_folder_is_invalid_input(alice: Client, workdir: Path) -> None:
    alice.write_text(path="alice/data/a.txt", text="a")

    with pytest.raises(InvalidInput) as caught:
        alice.download(path="alice/data/a.txt", destination=workdir)

    assert caught.value.message == (
        f"{workdir} is a folder; name the file to save alice/data/a.txt as."
    )


# --- uploads ----------------------------------------------------------------------------


def test_upload_of_20_mib_is_streamed_from_disk_in_chunks(
    alice: Client, live: LiveServer, workdir: Path
) -> None:
    size = 20 * MiB
    local = workdir / "measurements.bin"
    digest = write_random(local, size)
    progress = Recorder()
    warm_up = workdir / "warm-up.txt"
    warm_up.write_text("w")
    alice.upload(folder="alice/data", files=[warm_up])  # one-time imports are not the upload's

    tracemalloc.start()
    try:
        uploaded = alice.upload(folder="alice/data", files=[local], progress=progress)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert isinstance(uploaded, Uploaded)
    assert [(e.path, e.size) for e in uploaded.files] == [("alice/data/measurements.bin", size)]
    assert sha256_of(live.files_dir / "alice" / "data" / "measurements.bin") == digest
    # The server thread runs in this process too, so this bounds both sides together.
    assert peak < size // 4, f"peak {peak} bytes for a {size}-byte upload"
    assert len(progress.calls) > 10
    assert progress.calls[-1] == (size, size)


def test_upload_of_several_files_counts_progress_over_their_total(
    alice: Client, workdir: Path
) -> None:
    first, second = workdir / "one.csv", workdir / "two.csv"
    first.write_text("a,b\n1,2\n")
    second.write_text("c\n" * 1000)
    progress = Recorder()

    uploaded = alice.upload(folder="alice/data", files=[first, second], progress=progress)

    assert [e.path for e in uploaded.files] == ["alice/data/one.csv", "alice/data/two.csv"]
    assert progress.calls[0] == (0, 2008)
    assert progress.calls[-1] == (2008, 2008)
    assert alice.read_bytes(path="alice/data/two.csv") == b"c\n" * 1000


def test_upload_onto_an_existing_file_needs_overwrite(alice: Client, workdir: Path) -> None:
    local = workdir / "a.txt"
    local.write_text("new")
    alice.write_text(path="alice/data/a.txt", text="old")

    with pytest.raises(Conflict) as caught:
        alice.upload(folder="alice/data", files=[local])
    alice.upload(folder="alice/data", files=[local], overwrite=True)

    assert caught.value.message == (
        "alice/data/a.txt already exists; upload with overwrite to replace it."
    )
    assert alice.read_bytes(path="alice/data/a.txt") == b"new"


def test_upload_into_another_users_library_is_permission_denied(
    alice: Client, live: LiveServer, workdir: Path
) -> None:
    live.add_user("bob")
    local = workdir / "payload.bin"
    write_random(local, 4 * MiB)  # more than the socket buffers: refused mid-body

    with pytest.raises(PermissionDenied) as caught:
        alice.upload(folder="bob/data", files=[local])

    assert caught.value.message == (
        "'bob' is not your library: you can reach alice/... and common/..."
    )
    assert list((live.files_dir / "bob" / "data").iterdir()) == []


def test_upload_with_extract_unpacks_a_zip_into_a_folder(alice: Client, workdir: Path) -> None:
    archive = workdir / "twin.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        writer.writestr("config.yaml", "name: twin\n")
        writer.writestr("scripts/run.sh", "echo run\n")

    uploaded = alice.upload(folder="alice/digital_twins", files=[archive], extract=True)

    assert uploaded.extracted == ["alice/digital_twins/twin"]
    assert alice.read_bytes(path="alice/digital_twins/twin/scripts/run.sh") == b"echo run\n"


def test_upload_of_a_missing_local_file_fails_before_sending(alice: Client, workdir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        alice.upload(folder="alice/data", files=[workdir / "missing.csv"])

    assert alice.list_entries(path="alice/data").total == 0


def test_upload_of_two_files_with_one_name_is_invalid_input(alice: Client, workdir: Path) -> None:
    (workdir / "x").mkdir()
    (workdir / "y").mkdir()
    (workdir / "x" / "a.txt").write_text("x")
    (workdir / "y" / "a.txt").write_text("y")

    with pytest.raises(InvalidInput) as caught:
        alice.upload(folder="alice/data", files=[workdir / "x/a.txt", workdir / "y/a.txt"])

    assert caught.value.message == (
        "More than one file is named 'a.txt'; a folder holds one file of a name, so upload "
        "them separately."
    )


def test_upload_keeps_quotes_in_file_names(alice: Client, workdir: Path) -> None:
    local = workdir / 'the "best" run; v2.txt'
    local.write_text("q")

    uploaded = alice.upload(folder="alice/data", files=[local])

    assert [e.name for e in uploaded.files] == ['the "best" run; v2.txt']


def test_upload_keeps_non_ascii_file_names(alice: Client, workdir: Path) -> None:
    local = workdir / "Messwerte-März.csv"
    local.write_text("t\n")

    uploaded = alice.upload(folder="alice/data", files=[local])

    assert [e.name for e in uploaded.files] == ["Messwerte-März.csv"]


# --- folders, move, copy, delete --------------------------------------------------------


def test_make_folder_then_again_is_conflict(alice: Client) -> None:
    created = alice.make_folder(path="alice/data/runs")

    with pytest.raises(Conflict) as caught:
        alice.make_folder(path="alice/data/runs")

    assert (created.path, created.type) == ("alice/data/runs", EntryType.FOLDER)
    assert caught.value.message == "alice/data/runs already exists."


def test_move_renames_a_file(alice: Client) -> None:
    alice.write_text(path="alice/data/a.txt", text="a")

    moved = alice.move(source="alice/data/a.txt", destination="alice/models/a.txt")

    assert moved.path == "alice/models/a.txt"
    assert alice.read_bytes(path="alice/models/a.txt") == b"a"
    with pytest.raises(NotFound):
        alice.stat(path="alice/data/a.txt")


def test_move_onto_an_existing_file_needs_overwrite(alice: Client) -> None:
    alice.write_text(path="alice/data/a.txt", text="a")
    alice.write_text(path="alice/data/b.txt", text="b")

    with pytest.raises(Conflict) as caught:
        alice.move(source="alice/data/a.txt", destination="alice/data/b.txt")
    alice.move(source="alice/data/a.txt", destination="alice/data/b.txt", overwrite=True)

    assert caught.value.message == "alice/data/b.txt already exists."
    assert alice.read_bytes(path="alice/data/b.txt") == b"a"


def test_copy_from_common_into_your_library(alice: Client, live: LiveServer) -> None:
    with live.client_for("root") as admin:
        admin.write_text(path="common/tools/solver.py", text="print('solve')\n")

    copied = alice.copy(source="common/tools/solver.py", destination="alice/tools/solver.py")

    assert copied.path == "alice/tools/solver.py"
    assert alice.read_bytes(path="alice/tools/solver.py") == b"print('solve')\n"
    assert alice.stat(path="common/tools/solver.py").size == 15


def test_copy_into_common_as_a_user_is_permission_denied(alice: Client) -> None:
    alice.write_text(path="alice/data/a.txt", text="a")

    with pytest.raises(PermissionDenied) as caught:
        alice.copy(source="alice/data/a.txt", destination="common/data/a.txt")

    assert caught.value.message == (
        "Your role 'user' does not allow 'write_common'; ask an administrator for a role that does."
    )


def test_delete_of_a_folder_with_content_needs_recursive(alice: Client) -> None:
    alice.make_folder(path="alice/data/run")
    alice.write_text(path="alice/data/run/out.csv", text="1")

    with pytest.raises(Conflict) as caught:
        alice.delete(path="alice/data/run")
    alice.delete(path="alice/data/run", recursive=True)

    assert caught.value.message == (
        "alice/data/run is a folder that is not empty; delete it recursively."
    )
    assert alice.list_entries(path="alice/data").total == 0


def test_delete_of_a_file(alice: Client) -> None:
    alice.write_text(path="alice/data/a.txt", text="a")

    alice.delete(path="alice/data/a.txt")

    with pytest.raises(NotFound):
        alice.stat(path="alice/data/a.txt")


# --- search -----------------------------------------------------------------------------


def test_search_by_name_and_by_text(alice: Client) -> None:
    alice.write_text(path="alice/data/tank-level.csv", text="t,level\n0,1.5\n")
    alice.write_text(path="alice/models/notes.md", text="intro\nthe tank LEVEL rises\n")

    by_name = alice.search(query="tank")
    by_text = alice.search(query="level", mode="text", path="alice/models")

    assert isinstance(by_name, SearchResult)
    assert [hit.path for hit in by_name.hits] == ["alice/data/tank-level.csv"]
    assert [(h.path, h.line, h.snippet) for h in by_text.hits] == [
        ("alice/models/notes.md", 2, "the tank LEVEL rises")
    ]
    assert not by_name.truncated


def test_search_stopped_by_the_limit_says_truncated(alice: Client) -> None:
    for number in range(3):
        alice.write_text(path=f"alice/data/run-{number}.csv", text="x")

    result = alice.search(query="run-*.csv", limit=2)

    assert len(result.hits) == 2
    assert result.truncated


def test_search_for_blanks_is_invalid_input(alice: Client) -> None:
    with pytest.raises(InvalidInput) as caught:
        alice.search(query="   ")

    assert caught.value.message == "Type something to search for."
