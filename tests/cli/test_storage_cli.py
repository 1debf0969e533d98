"""`dtaas storage` and `dtaas quota ...` against a real server on a loopback port."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.cli.test_cli import run
from tests.live import LiveServer

KIB = 1024
MIB = 1024 * 1024


def test_storage_shows_what_you_store_by_part_against_the_quota(
    runner: CliRunner, live: LiveServer
) -> None:
    data = live.files_dir / "alice" / "data"
    (data / "levels.csv").write_bytes(b"1" * 1536 * KIB)
    live.store_credentials("root")
    run(runner, "quota", "set", "alice", "4")
    live.store_credentials("alice")

    result = run(runner, "storage")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "alice: 1.5 MiB of 4.0 MiB used, 2.5 MiB free (quota: 4 MiB, set for alice)\n"
        "  library       1.5 MiB\n"
        "  instances         0 B\n"
        "  snapshots         0 B\n"
    )


def test_storage_without_a_quota_is_unlimited(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("alice")

    result = run(runner, "storage")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "alice: 0 B used (quota: unlimited, site default)"


def test_admin_sets_lists_and_resets_a_quota(runner: CliRunner, live: LiveServer) -> None:
    (live.files_dir / "alice" / "data" / "x.bin").write_bytes(b"x" * 3 * MIB)
    live.store_credentials("root")

    set_ = run(runner, "quota", "set", "alice", "2")
    listed = run(runner, "quota", "ls")
    theirs = run(runner, "storage", "alice")
    reset = run(runner, "quota", "set", "alice", "none")

    assert set_.exit_code == 0, set_.output
    assert set_.stdout == "alice's quota: 2 MiB, set for alice; 3.0 MiB used, over the quota.\n"
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in listed.stdout.splitlines()
        if line.startswith("│")
    ]
    assert rows == [
        ["alice", "3.0 MiB", "0 B", "0 B", "3.0 MiB (over)", "2 MiB, set for alice"],
        ["root", "0 B", "0 B", "0 B", "0 B", "unlimited, site default"],
    ]
    assert theirs.stdout.splitlines()[0] == (
        "alice: 3.0 MiB of 2.0 MiB used, 0 B free, over the quota (quota: 2 MiB, set for alice)"
    )
    assert reset.stdout == "alice's quota: unlimited, site default; 3.0 MiB used.\n"


def test_a_quota_that_is_not_a_number_is_refused_before_asking_the_server(
    runner: CliRunner, live: LiveServer
) -> None:
    live.store_credentials("root")

    result = run(runner, "quota", "set", "alice", "lots")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: 'lots' is not a quota: give whole MiB from 0 to 1073741824, or 'none' for "
        "the site default.\n"
    )


def test_only_admins_set_quotas(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("alice")

    result = run(runner, "quota", "set", "alice", "100")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: Your role 'user' does not allow 'manage_users'; ask an administrator for a "
        "role that does.\n"
    )
