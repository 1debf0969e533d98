"""`dtaas asset ...` against a real server on a loopback port."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from dtaas import cli
from dtaas.cli import app
from tests.live import LiveServer, kept_logging

MiB = 1024 * 1024
DOT_DOT = (
    "error: The path contains '..'; parent references are not allowed, even when they would "
    "stay inside. Give the path from the library root.\n"
)
NOT_YOURS = "error: 'bob' is not your library: you can reach alice/... and common/...\n"
# library.service.delete tests a folder for content with an unclosed os.scandir iterator;
# drop this once it uses `with os.scandir(...)`.


def run(runner: CliRunner, *args: str) -> Result:
    """Invoke the CLI; tracebacks must never reach the user, whatever the outcome."""
    with kept_logging():
        result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def signed_in(live: LiveServer) -> LiveServer:
    """The live server, with alice's token stored where the CLI looks."""
    live.store_credentials("alice")
    return live


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current folder for local files (``tmp_path`` also holds the site)."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def put_text(live: LiveServer, path: str, text: str, *, user: str = "alice") -> None:
    with live.client_for(user) as client:
        client.write_text(path=path, text=text)


def read_stored(live: LiveServer, path: str) -> bytes:
    return (live.files_dir / path).read_bytes()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


# --- ls ---------------------------------------------------------------------------------


def test_ls_without_a_path_lists_your_library_and_common(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "asset", "ls")

    assert result.exit_code == 0, result.output
    assert result.stdout == "alice/\ncommon/\n"


def test_ls_long_shows_type_human_size_time_and_name(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    put_text(signed_in, "alice/data/levels.csv", "x" * 1536)
    put_text(signed_in, "alice/data/a:thumbs_up:[b].txt", "tiny")
    with signed_in.client_for("alice") as client:
        client.make_folder(path="alice/data/runs")

    result = run(runner, "asset", "ls", "-l", "alice/data")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [cell.strip() for cell in lines[1].strip("┃ ").split("┃")] == [
        "type",
        "size",
        "modified",
        "name",
    ]
    rows = [[cell.strip() for cell in line.strip("│ ").split("│")] for line in lines[3:-1]]
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("folder", "-", "runs/"),
        ("file", "4 B", "a:thumbs_up:[b].txt"),  # names are never markup or emoji codes
        ("file", "1.5 KiB", "levels.csv"),
    ]
    assert all(len(row[2]) == len("2025-01-01 12:00") for row in rows)


def test_ls_sorts_by_size_in_reverse(runner: CliRunner, signed_in: LiveServer) -> None:
    for name, size in [("small.txt", 1), ("large.txt", 300), ("medium.txt", 20)]:
        put_text(signed_in, f"alice/data/{name}", "x" * size)

    result = run(runner, "asset", "ls", "alice/data", "--sort", "size", "--reverse")

    assert result.exit_code == 0, result.output
    assert result.stdout == "large.txt\nmedium.txt\nsmall.txt\n"


def test_ls_fetches_every_page_of_a_large_folder(
    runner: CliRunner, signed_in: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "PAGE_SIZE", 2)
    for number in range(5):
        put_text(signed_in, f"alice/data/run-{number}.csv", "x")

    result = run(runner, "asset", "ls", "alice/data")

    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(f"run-{number}.csv\n" for number in range(5))


def test_ls_of_a_file_says_it_is_not_a_folder(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "alice/data/a.txt", "a")

    result = run(runner, "asset", "ls", "alice/data/a.txt")

    assert result.exit_code == 1
    assert result.stderr == "error: alice/data/a.txt is a file, not a folder.\n"


def test_ls_without_credentials_says_to_log_in(runner: CliRunner, live: LiveServer) -> None:
    result = run(runner, "asset", "ls")

    assert result.exit_code == 1
    assert result.stderr == "error: You are not signed in; run `dtaas login` first.\n"


# --- cat --------------------------------------------------------------------------------


def test_cat_writes_the_exact_bytes_to_stdout(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    content = b"\x00\xff\r\n\x1b[31m" + bytes(range(256)) + "ü\n".encode()
    (workdir / "blob.bin").write_bytes(content)
    with signed_in.client_for("alice") as client:
        client.upload(folder="alice/data", files=[workdir / "blob.bin"])

    result = run(runner, "asset", "cat", "alice/data/blob.bin")

    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == content
    assert result.stderr == ""


def test_cat_of_a_folder_is_refused_with_the_servers_message(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "asset", "cat", "alice/data")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == ("error: alice/data is a folder; list it, or download it as a zip.\n")


def test_cat_of_a_path_with_dot_dot_is_refused(runner: CliRunner, signed_in: LiveServer) -> None:
    result = run(runner, "asset", "cat", "alice/data/../../bob/secret.txt")

    assert result.exit_code == 1
    assert result.stderr == DOT_DOT


def test_cat_into_a_closed_pipe_stops_quietly(signed_in: LiveServer, workdir: Path) -> None:
    big = workdir / "big.txt"
    big.write_bytes(b"line\n" * (MiB // 2))  # far more than a pipe buffers
    with signed_in.client_for("alice") as client:
        client.upload(folder="alice/data", files=[big])

    # A process of its own, like `dtaas asset cat ... | head -c 100`.
    command = ["asset", "cat", "alice/data/big.txt"]
    process = subprocess.Popen(
        [sys.executable, "-c", "from dtaas.cli import main; main()", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    head = process.stdout.read(100)
    process.stdout.close()
    stderr = process.stderr.read()
    process.stderr.close()
    returncode = process.wait(timeout=30)

    assert head == b"line\n" * 20
    assert (returncode, stderr) == (cli.EXIT_BROKEN_PIPE, b"")


# --- get --------------------------------------------------------------------------------


def test_get_saves_a_file_under_its_name_here(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    put_text(signed_in, "alice/data/levels.csv", "t,level\n0,1.5\n")

    result = run(runner, "asset", "get", "alice/data/levels.csv")

    assert result.exit_code == 0, result.output
    assert (workdir / "levels.csv").read_bytes() == b"t,level\n0,1.5\n"
    assert result.stdout == "Saved alice/data/levels.csv as levels.csv (14 B).\n"
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    assert sorted(p.name for p in workdir.iterdir()) == ["levels.csv"]


def test_get_into_an_existing_folder_keeps_the_name(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    put_text(signed_in, "alice/data/levels.csv", "1")
    (workdir / "inbox").mkdir()

    result = run(runner, "asset", "get", "alice/data/levels.csv", "inbox")

    assert result.exit_code == 0, result.output
    assert (workdir / "inbox" / "levels.csv").read_bytes() == b"1"


def test_get_of_a_folder_saves_a_valid_zip_of_its_members(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    with signed_in.client_for("alice") as client:
        client.make_folder(path="alice/models/tank")
        client.make_folder(path="alice/models/tank/parts")
        client.write_text(path="alice/models/tank/model.json", text='{"volume": 2}')
        client.write_text(path="alice/models/tank/parts/valve.txt", text="valve")

    result = run(runner, "asset", "get", "alice/models/tank")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Saved alice/models/tank as tank.zip (")
    with zipfile.ZipFile(workdir / "tank.zip") as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == ["model.json", "parts/valve.txt"]
        assert archive.read("model.json") == b'{"volume": 2}'


def test_get_refuses_to_replace_a_file_without_force(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    put_text(signed_in, "alice/data/levels.csv", "new")
    (workdir / "mine.csv").write_text("old")

    refused = run(runner, "asset", "get", "alice/data/levels.csv", "mine.csv")
    forced = run(runner, "asset", "get", "alice/data/levels.csv", "mine.csv", "--force")

    assert refused.exit_code == 1
    assert refused.stderr == "error: mine.csv exists; add --force to replace it.\n"
    assert forced.exit_code == 0, forced.output
    assert (workdir / "mine.csv").read_text() == "new"


def test_get_of_a_missing_file_writes_nothing(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    result = run(runner, "asset", "get", "alice/data/missing.csv")

    assert result.exit_code == 1
    assert result.stderr == "error: 'alice/data/missing.csv' does not exist.\n"
    assert list(workdir.iterdir()) == []


def test_get_into_a_missing_local_folder_names_it(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    put_text(signed_in, "alice/data/levels.csv", "1")

    result = run(runner, "asset", "get", "alice/data/levels.csv", "nowhere/levels.csv")

    assert result.exit_code == 1
    assert result.stderr == "error: nowhere: No such file or directory\n"


# --- put --------------------------------------------------------------------------------


def test_put_uploads_files_and_lists_them(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    (workdir / "one.csv").write_text("a,b\n")
    (workdir / "two.csv").write_text("c\n" * 1024)

    result = run(runner, "asset", "put", "one.csv", "two.csv", "alice/data")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "Uploaded alice/data/one.csv (4 B).\nUploaded alice/data/two.csv (2.0 KiB).\n"
    )
    assert result.stderr == ""
    assert read_stored(signed_in, "alice/data/two.csv") == b"c\n" * 1024


def test_put_of_20_mib_stores_the_same_bytes_without_holding_them(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    size = 20 * MiB
    with (workdir / "big.bin").open("wb") as handle:
        for _ in range(20):
            handle.write(os.urandom(MiB))
    (workdir / "warm-up.txt").write_text("w")
    run(runner, "asset", "put", "warm-up.txt", "alice/data")  # one-time imports not counted

    tracemalloc.start()
    try:
        result = run(runner, "asset", "put", "big.bin", "alice/data")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert result.exit_code == 0, result.output
    assert result.stdout == "Uploaded alice/data/big.bin (20.0 MiB).\n"
    stored = signed_in.files_dir / "alice" / "data" / "big.bin"
    assert sha256_of(stored) == sha256_of(workdir / "big.bin")
    assert peak < size // 4, f"peak {peak} bytes for a {size}-byte upload"


def test_put_into_another_users_library_is_denied(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    signed_in.add_user("bob")
    (workdir / "a.txt").write_text("a")

    result = run(runner, "asset", "put", "a.txt", "bob/data")

    assert result.exit_code == 1
    assert result.stderr == NOT_YOURS
    assert list((signed_in.files_dir / "bob" / "data").iterdir()) == []


def test_put_onto_an_existing_file_needs_overwrite(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    put_text(signed_in, "alice/data/a.txt", "old")
    (workdir / "a.txt").write_text("new")

    refused = run(runner, "asset", "put", "a.txt", "alice/data")
    replaced = run(runner, "asset", "put", "a.txt", "alice/data", "--overwrite")

    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: alice/data/a.txt already exists; upload with overwrite to replace it.\n"
    )
    assert replaced.exit_code == 0, replaced.output
    assert read_stored(signed_in, "alice/data/a.txt") == b"new"


def test_put_with_extract_unpacks_a_zip(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    with zipfile.ZipFile(workdir / "twin.zip", "w") as writer:
        writer.writestr("config.yaml", "name: twin\n")

    result = run(runner, "asset", "put", "twin.zip", "alice/digital_twins", "--extract")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Unpacked into alice/digital_twins/twin/.\n"
    assert read_stored(signed_in, "alice/digital_twins/twin/config.yaml") == b"name: twin\n"


def test_put_of_a_missing_local_file_names_it(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    result = run(runner, "asset", "put", "missing.csv", "alice/data")

    assert result.exit_code == 1
    assert result.stderr == "error: missing.csv: No such file or directory\n"


def test_transfers_draw_a_progress_bar_on_a_terminal(
    runner: CliRunner, signed_in: LiveServer, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, width=120, markup=False, emoji=False)
    monkeypatch.setattr(cli, "err", console)
    (workdir / "data.bin").write_bytes(b"d" * 3 * MiB)

    uploaded = run(runner, "asset", "put", "data.bin", "alice/data")
    downloaded = run(runner, "asset", "get", "alice/data/data.bin", "back.bin")

    assert uploaded.exit_code == 0, uploaded.output
    assert downloaded.exit_code == 0, downloaded.output
    drawn = terminal.getvalue()
    assert "Uploading to alice/data" in drawn
    assert "Downloading alice/data/data.bin" in drawn
    assert drawn.count("3.0/3.0 MiB") >= 2
    assert (workdir / "back.bin").read_bytes() == b"d" * 3 * MiB


# --- rm, mv, cp, mkdir ------------------------------------------------------------------


def test_rm_deletes_a_file(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "alice/data/a.txt", "a")

    result = run(runner, "asset", "rm", "alice/data/a.txt")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Deleted alice/data/a.txt.\n"
    assert not (signed_in.files_dir / "alice" / "data" / "a.txt").exists()


def test_rm_of_a_folder_with_content_needs_recursive(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    with signed_in.client_for("alice") as client:
        client.make_folder(path="alice/data/run")
        client.write_text(path="alice/data/run/out.csv", text="1")

    refused = run(runner, "asset", "rm", "alice/data/run")
    deleted = run(runner, "asset", "rm", "-r", "alice/data/run")

    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: alice/data/run is a folder that is not empty; delete it recursively.\n"
    )
    assert deleted.exit_code == 0, deleted.output
    assert not (signed_in.files_dir / "alice" / "data" / "run").exists()


def test_mv_renames_a_file(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "alice/data/a.txt", "a")

    result = run(runner, "asset", "mv", "alice/data/a.txt", "alice/models/b.txt")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Moved alice/data/a.txt to alice/models/b.txt.\n"
    assert read_stored(signed_in, "alice/models/b.txt") == b"a"


def test_mv_onto_an_existing_file_needs_overwrite(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "alice/data/a.txt", "a")
    put_text(signed_in, "alice/data/b.txt", "b")

    refused = run(runner, "asset", "mv", "alice/data/a.txt", "alice/data/b.txt")
    moved = run(runner, "asset", "mv", "alice/data/a.txt", "alice/data/b.txt", "--overwrite")

    assert refused.exit_code == 1
    assert refused.stderr == "error: alice/data/b.txt already exists.\n"
    assert moved.exit_code == 0, moved.output
    assert read_stored(signed_in, "alice/data/b.txt") == b"a"


def test_cp_copies_from_common_into_your_library(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "common/tools/solver.py", "print('solve')\n", user="root")

    result = run(runner, "asset", "cp", "common/tools/solver.py", "alice/tools/solver.py")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Copied common/tools/solver.py to alice/tools/solver.py.\n"
    assert read_stored(signed_in, "alice/tools/solver.py") == b"print('solve')\n"


def test_cp_onto_an_existing_file_needs_overwrite(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "alice/data/a.txt", "a")
    put_text(signed_in, "alice/data/b.txt", "b")

    refused = run(runner, "asset", "cp", "alice/data/a.txt", "alice/data/b.txt")
    copied = run(runner, "asset", "cp", "alice/data/a.txt", "alice/data/b.txt", "--overwrite")

    assert refused.exit_code == 1
    assert refused.stderr == "error: alice/data/b.txt already exists.\n"
    assert copied.exit_code == 0, copied.output
    assert read_stored(signed_in, "alice/data/b.txt") == b"a"


def test_mkdir_creates_a_folder_once(runner: CliRunner, signed_in: LiveServer) -> None:
    created = run(runner, "asset", "mkdir", "alice/data/runs")
    again = run(runner, "asset", "mkdir", "alice/data/runs")

    assert created.exit_code == 0, created.output
    assert created.stdout == "Created alice/data/runs/.\n"
    assert (signed_in.files_dir / "alice" / "data" / "runs").is_dir()
    assert again.exit_code == 1
    assert again.stderr == "error: alice/data/runs already exists.\n"


def test_mkdir_in_common_as_a_user_is_denied(runner: CliRunner, signed_in: LiveServer) -> None:
    result = run(runner, "asset", "mkdir", "common/data/mine")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Your role 'user' does not allow 'write_common'; ask an administrator for a "
        "role that does.\n"
    )


# --- search -----------------------------------------------------------------------------


def test_search_by_name_prints_one_path_per_line(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "alice/data/tank-level.csv", "1")
    put_text(signed_in, "common/models/tank.json", "{}", user="root")

    result = run(runner, "asset", "search", "tank")

    assert result.exit_code == 0, result.output
    assert result.stdout == "alice/data/tank-level.csv\ncommon/models/tank.json\n"
    assert result.stderr == ""


def test_search_text_prints_path_line_and_snippet(runner: CliRunner, signed_in: LiveServer) -> None:
    put_text(signed_in, "alice/models/notes.md", "intro\n  the tank [level] rises\n")

    result = run(runner, "asset", "search", "level", "--text", "--path", "alice/models")

    assert result.exit_code == 0, result.output
    assert result.stdout == "alice/models/notes.md:2: the tank [level] rises\n"


def test_search_says_on_stderr_when_results_were_truncated(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    for number in range(3):
        put_text(signed_in, f"alice/data/run-{number}.csv", "x")

    result = run(runner, "asset", "search", "run-*", "--limit", "2")

    assert result.exit_code == 0, result.output
    assert result.stdout == "alice/data/run-0.csv\nalice/data/run-1.csv\n"
    assert result.stderr == (
        "The search stopped early (2 results shown); narrow it with --path or raise --limit.\n"
    )


def test_search_in_another_users_library_is_denied(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "asset", "search", "x", "--path", "bob")

    assert result.exit_code == 1
    assert result.stderr == NOT_YOURS
