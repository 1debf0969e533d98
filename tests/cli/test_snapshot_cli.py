"""`dtaas snapshot ...` and `dtaas run --from-snapshot`: a running DT saved and re-spawned."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dtaas.client import Client
from dtaas.lifecycle import snapshots
from tests.cli.test_run_cli import run, wait_for_output
from tests.execution.processes import wait_until
from tests.live import LiveServer

OSCILLATOR = "alice/digital_twins/oscillator"
EXAMPLE = (
    Path(snapshots.__file__).parents[1] / "library/examples/common/digital_twins/mass-spring-damper"
)


@pytest.fixture
def api(live: LiveServer) -> Iterator[Client]:
    live.store_credentials("alice")
    shutil.copytree(EXAMPLE, live.files_dir / OSCILLATOR)
    with live.client_for("alice") as client:
        yield client


def test_save_download_upload_and_respawn_from_the_command_line(
    runner: CliRunner, api: Client, tmp_path: Path
) -> None:
    started = run(
        runner, "run", OSCILLATOR, "-p", "steps=100000", "-p", "step_delay=0.005", "--name", "osc"
    )
    assert started.exit_code == 0, started.output
    wait_for_output(api, 1, "step=20 ")

    created = run(runner, "snapshot", "create", "1", "--name", "mid-run")
    listing = run(runner, "snapshot", "ls")
    file = tmp_path / "osc.tar.zst"
    downloaded = run(runner, "snapshot", "download", "1", str(file))
    recorded = api.get_snapshot(snapshot_id=1).sha256
    run(runner, "instance", "terminate", "1")
    uploaded = run(runner, "snapshot", "upload", str(file), "--name", "moved")
    respawned = run(runner, "run", "--from-snapshot", "2")
    wait_for_output(api, 3, "step=")
    restored = api.job_logs(job_id=3)
    run(runner, "instance", "terminate", "2")
    removed = run(runner, "snapshot", "rm", "1")
    gone = run(runner, "snapshot", "show", "1")

    assert created.exit_code == 0, created.output
    assert created.stdout.startswith("Snapshot 1 of instance 1 is ready (")
    assert "mid-run" in listing.stdout and "osc" in listing.stdout
    assert listing.stderr.startswith("1 snapshot(s), ")
    assert downloaded.exit_code == 0, downloaded.output
    assert hashlib.sha256(file.read_bytes()).hexdigest() == recorded
    assert uploaded.stdout == (
        f"Uploaded snapshot 2 ({OSCILLATOR}); re-spawn it with:\n  dtaas run --from-snapshot 2\n"
    )
    assert respawned.exit_code == 0, respawned.output
    assert respawned.stdout.startswith("Created instance 2 (moved (re-spawned)); job 3 is queued")
    assert restored.startswith("restored at step=")
    assert removed.stdout == "Deleted snapshot 1.\n"
    assert (gone.exit_code, gone.stderr) == (1, "error: There is no snapshot 1.\n")
    wait_until(
        lambda: all(i.state.value == "terminated" for i in api.list_instances()),
        message="both instances terminated",
    )


def test_run_needs_a_dt_or_a_snapshot_but_not_both(runner: CliRunner, api: Client) -> None:
    neither = run(runner, "run")
    both = run(runner, "run", OSCILLATOR, "--from-snapshot", "1")
    extra = run(runner, "run", "--from-snapshot", "1", "-p", "steps=3")

    assert neither.exit_code == both.exit_code == extra.exit_code == 2
    assert "give either a DT or --from-snapshot ID" in neither.stderr
    assert "give either a DT or --from-snapshot ID" in both.stderr
    assert "drop --config, --param and --phase" in extra.stderr
