"""Recovery: jobs outlive a killed platform and are recorded after its restart; no orphans.

The acceptance tests run the real ``dtaas serve`` (``tests/lifecycle/server.py``) and
SIGKILL it, with local jobs and with jobs on the session's Ray head; the tests of one
supervisor tick run in-process on both databases.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from dtaas.execution.base import Executor, JobOutcome, JobSpec
from dtaas.lifecycle.models import Job, JobState
from dtaas.lifecycle.supervisor import Supervisor, executors_for
from tests.conftest import POSTGRES_ADMIN_URL
from tests.execution.processes import (
    assert_no_processes_of,
    sandboxes_of,
    shims_of,
    wait_until,
)
from tests.execution.ray_head import RayHead
from tests.lifecycle.conftest import (
    API,
    bound_sessions,
    supervisor_settings,
    write_twin,
)
from tests.lifecycle.server import ServerProcess, server_process

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("starting", "running", "cancelling")
# Prints, waits (at most 90 s) for go/<its instance id> (or go/all) in alice's library,
# prints again.
WAIT_FOR_GO = """#!/bin/bash
echo "start $DTAAS_INSTANCE_ID"
go=/workspace/data/go
for i in $(seq 1800); do
  [ -e "$go/$DTAAS_INSTANCE_ID" ] || [ -e "$go/all" ] && break
  sleep 0.05
done
echo "done $DTAAS_INSTANCE_ID"
"""
PRINT_ID = """#!/bin/bash
echo "instance $DTAAS_INSTANCE_ID"
sleep 0.2
echo "job $DTAAS_JOB_ID"
"""


# --- a real server ------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A data directory for a server; no process of it may survive the test."""
    yield tmp_path / "site"
    assert_no_processes_of(tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, site: Path) -> Iterator[str]:
    """The server's database URL: its SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{site / 'dtaas.db'}"
        return
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def alice_client(server: ServerProcess) -> httpx.Client:
    passwords = server.demo_passwords()
    assert set(passwords) == {"admin", "alice", "bob"}, server.output()
    return server.client(server.token_for("alice", passwords["alice"]))


def start_jobs(api: httpx.Client, twin: str, count: int) -> list[tuple[int, int]]:
    """``count`` instances of ``twin`` each running execute: (instance id, job id) pairs."""
    started = []
    for _ in range(count):
        created = api.post(f"{API}/instances", json={"twin_path": twin})
        assert created.status_code == 201, created.text
        instance_id = created.json()["id"]
        queued = api.post(f"{API}/instances/{instance_id}/phases", json={"phase": "execute"})
        assert queued.status_code == 202, queued.text
        started.append((instance_id, queued.json()["id"]))
    return started


def job_of(api: httpx.Client, job_id: int) -> dict[str, Any]:
    response = api.get(f"{API}/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def log_of(api: httpx.Client, job_id: int) -> str:
    response = api.get(f"{API}/jobs/{job_id}/logs", params={"stream": "stdout"})
    assert response.status_code == 200, response.text
    return response.text


def ended(api: httpx.Client, job_id: int) -> dict[str, Any] | None:
    """The job once it has ended."""
    job = job_of(api, job_id)
    return job if job["state"] in TERMINAL else None


def states(api: httpx.Client, jobs: list[tuple[int, int]]) -> list[str]:
    return [job_of(api, job_id)["state"] for _, job_id in jobs]


def test_jobs_outlive_a_killed_platform_and_are_recorded_after_restart(site, database):
    with (
        contextlib.ExitStack() as stack,
        server_process(
            site,
            DTAAS_DATABASE_URL=database,
            DTAAS_JOBS_MAX_RUNNING="20",
            DTAAS_JOBS_MAX_RUNNING_PER_USER="20",
            DTAAS_JOB_STOP_GRACE_SECONDS="1",
        ) as server,
    ):
        twin = write_twin_on(site, "waiter", WAIT_FOR_GO)
        go = site / "files" / "alice" / "data" / "go"
        go.mkdir()
        stack.callback((go / "all").touch)  # whatever happens, the jobs end
        with alice_client(server) as api:
            jobs = start_jobs(api, twin, 20)
            wait_until(
                lambda: all(
                    log_of(api, job_id) == f"start {instance_id}\n" for instance_id, job_id in jobs
                ),
                timeout=60,
                message="20 jobs printing their first line",
            )
            assert states(api, jobs) == ["running"] * 20

        server.kill()
        assert shims_of(site) == 20  # the jobs run on without the platform
        early, late = jobs[:10], jobs[10:]
        for instance_id, _ in early:
            (go / str(instance_id)).touch()
        wait_until(lambda: shims_of(site) == 10, message="10 jobs ending meanwhile")

        server.start()
        with alice_client_again(server, api.headers["Authorization"]) as api:
            wait_until(
                lambda: states(api, early) == ["succeeded"] * 10,
                message="the jobs that ended meanwhile recorded",
            )
            assert states(api, late) == ["running"] * 10  # re-attached, still running
            for instance_id, _ in late:
                (go / str(instance_id)).touch()
            wait_until(
                lambda: states(api, late) == ["succeeded"] * 10,
                message="the re-attached jobs recorded",
            )
            for instance_id, job_id in jobs:
                job = job_of(api, job_id)
                assert (job["exit_code"], job["reason"]) == (0, "exited with status 0")
                assert log_of(api, job_id) == f"start {instance_id}\ndone {instance_id}\n"
                instance = api.get(f"{API}/instances/{instance_id}").json()
                assert instance["state"] == "ready"
    # site's fixture: no shim, sandbox or job process is left


def test_fifty_jobs_at_once_finish_within_the_per_user_limit(site, database):
    limit = 4
    with server_process(
        site,
        DTAAS_DATABASE_URL=database,
        DTAAS_JOBS_MAX_RUNNING="8",
        DTAAS_JOBS_MAX_RUNNING_PER_USER=str(limit),
    ) as server:
        twin = write_twin_on(site, "printer", PRINT_ID)
        sampler = create_engine(database)
        try:
            with alice_client(server) as api:
                jobs = start_jobs(api, twin, 50)
                most_recorded = most_sandboxes = 0

                def all_ended() -> bool:
                    nonlocal most_recorded, most_sandboxes
                    with sampler.connect() as connection:
                        counted = connection.execute(
                            text("SELECT state, count(*) FROM job GROUP BY state")
                        )
                        rows: dict[str, int] = dict(counted.all())
                    active = sum(rows.get(state, 0) for state in ACTIVE)
                    most_recorded = max(most_recorded, active)
                    most_sandboxes = max(most_sandboxes, sandboxes_of(site))
                    return sum(rows.get(state, 0) for state in TERMINAL) == 50

                wait_until(all_ended, timeout=90, message="50 jobs ending")

                assert 1 < most_recorded <= limit
                assert most_sandboxes <= limit
                for instance_id, job_id in jobs:
                    assert job_of(api, job_id)["state"] == "succeeded"
                    assert log_of(api, job_id) == f"instance {instance_id}\njob {job_id}\n"
        finally:
            sampler.dispose()


# Prints five lines, waits for go/1 in its owner's library, prints five more while the
# platform is down, waits for go/2, prints five more and writes its result into its
# working copy. At most 90 s per wait.
RAY_JOB = """#!/bin/bash
lines() { for i in $(seq "$1" "$2"); do echo "line $i"; sleep 0.1; done; }
wait_for() {
  for i in $(seq 1800); do [ -e "$DTAAS_WORKSPACE/data/go/$1" ] && return; sleep 0.05; done
}
lines 1 5
wait_for 1
lines 6 10
wait_for 2
lines 11 15
mkdir -p output
echo "result of job $DTAAS_JOB_ID" > output/result.txt
"""


@pytest.mark.xdist_group("ray")
def test_a_ray_job_is_reattached_after_a_killed_platform_with_its_whole_log_and_result(
    site, ray_head: RayHead
):
    with (
        contextlib.ExitStack() as stack,
        server_process(
            site,
            DTAAS_EXECUTOR="ray",
            DTAAS_RAY_ADDRESS=ray_head.address,
            DTAAS_RAY_AUTH_TOKEN=ray_head.token,
            # Shared storage, as a site whose Ray nodes mount its data directory.
            DTAAS_RAY_SHARED_DIR=str(site.resolve()),
            DTAAS_JOB_STOP_GRACE_SECONDS="1",
            DTAAS_EMBEDDED_MQTT="false",
        ) as server,
    ):
        twin = write_twin_on(site, "ray-writer", RAY_JOB)
        go = site / "files" / "alice" / "data" / "go"
        go.mkdir()
        for gate in ("1", "2"):  # whatever happens, the job ends
            stack.callback((go / gate).touch)
        with alice_client(server) as api:
            [(instance_id, job_id)] = start_jobs(api, twin, 1)
            wait_until(
                lambda: log_of(api, job_id).endswith("line 5\n"),
                message="the Ray job printing its first five lines",
            )
            assert job_of(api, job_id)["executor"] == "ray"

        server.kill()
        (go / "1").touch()  # five lines more while nobody follows the job's log
        copy = site / "instances" / str(instance_id) / "dt"

        server.start()
        with alice_client_again(server, api.headers["Authorization"]) as api:
            wait_until(
                lambda: log_of(api, job_id).endswith("line 10\n"),
                message="the lines printed meanwhile arriving",
            )
            assert job_of(api, job_id)["state"] == "running"  # re-attached, not failed
            (go / "2").touch()
            job = wait_until(lambda: ended(api, job_id), message="the re-attached Ray job recorded")
            log = log_of(api, job_id)
            instance = api.get(f"{API}/instances/{instance_id}").json()

    assert (job["state"], job["exit_code"], job["reason"]) == (
        "succeeded",
        0,
        "exited with status 0",
    )
    assert log == "".join(f"line {i}\n" for i in range(1, 16))
    assert (copy / "output" / "result.txt").read_text() == f"result of job {job_id}\n"
    assert instance["state"] == "ready"


def write_twin_on(site: Path, name: str, execute: str) -> str:
    """Write alice's DT ``name`` straight into the server's files."""
    folder = site / "files" / "alice" / "digital_twins" / name / "lifecycle"
    folder.mkdir(parents=True)
    (folder / "execute").write_text(execute)
    (folder / "execute").chmod(0o755)
    return f"alice/digital_twins/{name}"


def alice_client_again(server: ServerProcess, authorization: str) -> httpx.Client:
    """A client with the token made before the restart (it is in the database)."""
    return server.client(authorization.removeprefix("Bearer "))


# --- one tick after a restart (in-process, both databases) ---------------------------------


def test_a_job_persisted_as_starting_without_handle_is_failed_by_the_next_tick(
    client, session, driver, settings, as_alice
):
    twin = write_twin(settings, "alice/digital_twins/waiter", {"execute": WAIT_FOR_GO})
    instance_id = client.post(
        f"{API}/instances", json={"twin_path": twin}, headers=as_alice
    ).json()["id"]
    job_id = client.post(
        f"{API}/instances/{instance_id}/phases", json={"phase": "execute"}, headers=as_alice
    ).json()["id"]
    # What the platform had persisted when it died between "starting" and the spawn.
    job = session.get(Job, job_id)
    assert job is not None
    job.state = JobState.STARTING
    session.commit()

    driver.tick()

    read = client.get(f"{API}/jobs/{job_id}", headers=as_alice).json()
    assert (read["state"], read["reason"]) == (
        "failed",
        "the platform restarted before the job started",
    )
    assert read["ended_at"] is not None
    assert client.get(f"{API}/instances/{instance_id}", headers=as_alice).json()["state"] == "ready"
    assert shims_of(settings.data_dir.resolve()) == 0


def state_of(session: Session, job_id: int) -> JobState:
    state: JobState = session.scalars(select(Job.state).where(Job.id == job_id)).one()
    return state


class PlatformCrash(BaseException):
    """The platform process ending abruptly (as SIGKILL would) at a chosen point."""


class CrashAfterSpawn(Executor):
    """Starts the job for real, then "crashes" before the supervisor records the handle."""

    name = "local"

    def __init__(self, inner: Executor) -> None:
        self.inner = inner
        # The supervisor builds a sandboxed job's paths when its executor has bwrap; without
        # this, the job got host paths inside the sandbox and failed at once ("Can't chdir"),
        # so the test saw its shim only if it looked within that moment.
        self.bwrap = getattr(inner, "bwrap", None)
        self.handles: list[dict[str, Any]] = []

    def start(self, spec: JobSpec) -> dict[str, Any]:
        self.handles.append(self.inner.start(spec))
        raise PlatformCrash

    def poll(self, handle: dict[str, Any]) -> JobOutcome | None:
        return self.inner.poll(handle)

    def stop(self, handle: dict[str, Any], *, grace: float) -> None:
        self.inner.stop(handle, grace=grace)

    def find(self, job_id: int) -> dict[str, Any] | None:
        return self.inner.find(job_id)


def test_a_job_spawned_just_before_a_crash_is_not_left_running_unrecorded(
    client, session, driver, settings, as_alice
):
    twin = write_twin(settings, "alice/digital_twins/waiter", {"execute": WAIT_FOR_GO})
    instance_id = client.post(
        f"{API}/instances", json={"twin_path": twin}, headers=as_alice
    ).json()["id"]
    job_id = client.post(
        f"{API}/instances/{instance_id}/phases", json={"phase": "execute"}, headers=as_alice
    ).json()["id"]
    crashing = CrashAfterSpawn(executors_for(supervisor_settings(settings))["local"])
    doomed = Supervisor(
        settings=supervisor_settings(settings),
        sessions=bound_sessions(session),
        executors={"local": crashing},
    )
    session.commit()
    with pytest.raises(PlatformCrash):
        doomed.tick()
    root = settings.data_dir.resolve()
    try:
        wait_until(lambda: shims_of(root) == 1, message="the spawned job running")
    except AssertionError as exc:  # seen once in CI: say what the job left behind
        left = {
            str(path.relative_to(root)): path.read_text(errors="replace")[-500:]
            for path in root.rglob("*")
            if path.is_file() and path.suffix in (".log", ".json", ".out", ".err")
        }
        raise AssertionError(f"{exc}; {shims_of(root)} shims alive; files: {left}") from exc

    driver.tick()  # the restarted platform's first tick
    recorded = state_of(session, job_id)
    alive = shims_of(root)
    go = settings.resolved_files_dir / "alice" / "data" / "go"
    go.mkdir()
    (go / str(instance_id)).touch()
    wait_until(lambda: shims_of(root) == 0, message="the job ending")
    driver.run_until(lambda: state_of(session, job_id).is_terminal(), message="the job recorded")

    # Invariant: a job is never recorded as ended while its process still runs.
    assert not (recorded.is_terminal() and alive), (
        f"job {job_id} was recorded {recorded.value} while its process kept running"
    )
