"""The Ray executor against a real local Ray head: what the shared contract suite cannot say.

Loopback only, refusals with a way out, waiting for a node, unreachable clusters, upload
versus shared storage, and a platform restart that re-attaches by the persisted handle.
The start/poll/stop/limits rules shared with the local executor are in
test_executor_contract.py, which runs over this backend too.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from pydantic import ValidationError

from dtaas.config import Settings
from dtaas.errors import BackendUnavailable
from dtaas.execution.base import EndReason, JobOutcome, Limits
from dtaas.execution.ray import JobRefused, RayExecutor, RayJobSpec, Resources, site_id_for
from tests.execution.processes import assert_no_processes_of, wait_until
from tests.execution.ray_head import START_TIMEOUT_SECONDS, RayHead

PATH = "/usr/local/bin:/usr/bin:/bin"
MARK = "DTAAS_TEST_ROOT"
OUTCOME_TIMEOUT = 30.0
MiB = 1024**2
# An IPv4 socket on loopback shows as 127.0.0.1, an IPv6 one bound to it as ::ffff:127.0.0.1.
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}

MakeExecutor = Callable[..., RayExecutor]

# With pytest-xdist's --dist loadgroup, every Ray test runs in one worker: one head.
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture
def make_executor(ray_head: RayHead, tmp_path: Path) -> Iterator[MakeExecutor]:
    """Executors of one site (as a platform and the same platform restarted would make)."""
    site = secrets.token_hex(4)
    made: list[RayExecutor] = []

    def make(**options: Any) -> RayExecutor:
        settings: dict[str, Any] = {
            "address": ray_head.address,
            "site_id": site,
            "auth_token": ray_head.token,
            "shared_dir": tmp_path,
            "grace_seconds": 1,
            **options,
        }
        executor = RayExecutor(**settings)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.close()
    assert_no_processes_of(tmp_path)


def make_spec(
    root: Path,
    job_id: int,
    script: str,
    *,
    resources: Resources | None = None,
    limits: Limits | None = None,
    cwd: Path | None = None,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> RayJobSpec:
    """A job running ``script`` with ``sh`` (or ``argv``) in a folder of its own."""
    folder = cwd or root / f"job-{job_id}"
    folder.mkdir(exist_ok=True)
    return RayJobSpec(
        job_id=job_id,
        argv=argv or ["/bin/sh", "-c", script],
        cwd=folder,
        # The mark lets processes_of() find every process of the job.
        env={"PATH": PATH, "LANG": "C.UTF-8", MARK: f"{root}/", **(env or {})},
        stdout=root / f"job-{job_id}.out",
        stderr=root / f"job-{job_id}.err",
        limits=limits or Limits(),
        resources=resources or Resources(),
    )


def persisted(handle: dict[str, Any]) -> dict[str, Any]:
    """The handle as the database gives it back."""
    loaded: dict[str, Any] = json.loads(json.dumps(handle))
    return loaded


def outcome_of(executor: RayExecutor, handle: dict[str, Any], timeout: float = OUTCOME_TIMEOUT):
    found: JobOutcome = wait_until(
        lambda: executor.poll(handle), timeout=timeout, message="the job's end"
    )
    return found


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def printed(executor: RayExecutor, handle: dict[str, Any], line: str) -> bool:
    """Whether ``line`` reached the job's stdout file (polling, as the supervisor does)."""
    assert executor.poll(handle) is None, "the job ended early"
    return line in text(Path(handle["stdout"])).splitlines()


def listening_addresses(processes: list[psutil.Process]) -> dict[tuple[str, int], str]:
    """Each listening TCP or bound UDP address of the processes, with its process name."""
    found = {}
    for process in processes:
        try:
            connections = process.net_connections(kind="inet")
            name = process.name()
        except psutil.Error:
            continue  # ended meanwhile
        for connection in connections:
            bound = connection.type == socket.SOCK_DGRAM and not connection.raddr
            if connection.status == psutil.CONN_LISTEN or bound:
                found[(connection.laddr.ip, connection.laddr.port)] = name
    return found


# --- the head --------------------------------------------------------------------------


def test_no_socket_of_the_ray_head_listens_beyond_loopback(ray_head, make_executor, tmp_path):
    executor = make_executor()
    handle = executor.start(make_spec(tmp_path, 1, "echo ready; sleep 300"))
    wait_until(lambda: printed(executor, handle, "ready"), message="the job's first line")

    listening = listening_addresses(ray_head.processes())
    executor.stop(handle, grace=1)

    dashboard_port = int(ray_head.address.rsplit(":", 1)[1])
    assert ("127.0.0.1", dashboard_port) in listening
    assert len(listening) >= 5, listening  # GCS, raylet, dashboard, its agent, workers
    beyond = {address: name for address, name in listening.items() if address[0] not in LOOPBACK}
    assert beyond == {}
    assert outcome_of(executor, handle).reason == EndReason.CANCELLED


# --- refusals and waiting ------------------------------------------------------------


def test_an_oversize_working_copy_is_refused_with_the_way_out(make_executor, tmp_path):
    executor = make_executor(shared_dir=None, max_upload_bytes=MiB)
    spec = make_spec(tmp_path, 1, "echo never")
    (spec.cwd / "big.bin").write_bytes(b"\0" * (2 * MiB))

    with pytest.raises(JobRefused) as refused:
        executor.start(spec)

    message = str(refused.value)
    assert "working copy is 2 MiB or more, over the 1 MiB that may be uploaded" in message
    assert "set DTAAS_RAY_SHARED_DIR to a directory the Ray workers mount" in message
    assert executor.find(1) is None


def test_a_job_asking_more_cpus_than_any_node_has_is_refused(make_executor, tmp_path):
    executor = make_executor()
    spec = make_spec(tmp_path, 1, "echo never", resources=Resources(cpus=64))

    with pytest.raises(JobRefused) as refused:
        executor.start(spec)

    assert str(refused.value) == (
        "the job needs 64 CPUs; no node of the Ray cluster has that much: "
        "the largest has 2 CPUs (1 node(s) alive). Ask for less (resources: in dt.yaml), add a "
        "larger node, or set DTAAS_RAY_AUTOSCALING=true if the cluster adds nodes on demand"
    )
    assert executor.find(1) is None


def test_a_job_asking_for_a_resource_no_node_has_is_refused(make_executor, tmp_path):
    executor = make_executor()
    spec = make_spec(tmp_path, 1, "echo never", resources=Resources(custom={"fpga": 1}))

    with pytest.raises(JobRefused, match=r"the job needs 1 fpga; .* the largest has 0 fpga"):
        executor.start(spec)


def test_with_autoscaling_a_job_no_node_fits_waits_with_a_note_then_fails(make_executor, tmp_path):
    # The autoscaler may add a node, so the job is submitted; its log says what it waits
    # for, and Ray's own start timeout ends the wait.
    executor = make_executor(autoscaling=True, pending_note_seconds=0)
    spec = make_spec(tmp_path, 1, "echo never", resources=Resources(cpus=64))
    handle = executor.start(spec)

    wait_until(
        lambda: executor.poll(handle) is None and "waiting for a node" in text(spec.stderr),
        message="the note of a waiting job",
    )
    outcome = outcome_of(executor, handle, timeout=START_TIMEOUT_SECONDS + OUTCOME_TIMEOUT)

    assert outcome.reason == EndReason.LOST
    assert text(spec.stderr).splitlines() == [
        "[dtaas] waiting for a node: the job needs 64 CPUs; no node of the Ray cluster has "
        "that much: the largest has 2 CPUs (1 node(s) alive); the cluster's autoscaler may "
        "add one",
        "[dtaas] no Ray node took the job in time: the job needs 64 CPUs; no node of the Ray "
        "cluster has that much: the largest has 2 CPUs (1 node(s) alive)",
    ]
    assert text(spec.stdout) == ""


# --- start, poll, find ----------------------------------------------------------------


def test_a_job_gets_its_environment_and_its_whole_output_in_order(make_executor, tmp_path):
    executor = make_executor()
    # Several lines: Ray logs the entrypoint, and must not leave it in the output.
    script = 'echo to-stdout\necho to-stderr >&2\necho "$GREETING from $PWD"\nprintf end\nexit 3'
    spec = make_spec(tmp_path, 1, script, env={"GREETING": "hello"})

    handle = persisted(executor.start(spec))
    outcome = outcome_of(executor, handle)

    assert (outcome.reason, outcome.exit_code, outcome.signal) == (EndReason.EXITED, 3, None)
    # Ray merges the streams into one log.
    assert text(spec.stdout) == f"to-stdout\nto-stderr\nhello from {spec.cwd}\nend"
    assert text(spec.stderr) == ""
    assert outcome.wall_seconds is not None and 0 < outcome.wall_seconds < OUTCOME_TIMEOUT


def test_find_gives_the_handle_start_gave_and_none_for_a_job_never_started(make_executor, tmp_path):
    executor = make_executor()
    spec = make_spec(tmp_path, 7, "echo hi", limits=Limits(wall_time_seconds=600))
    handle = persisted(executor.start(spec))

    assert make_executor().find(7) == handle
    assert make_executor().find(8) is None
    assert outcome_of(executor, handle).succeeded


def test_a_handle_ray_does_not_know_is_lost_with_a_note(make_executor, tmp_path):
    executor = make_executor()
    spec = make_spec(tmp_path, 1, "echo never")
    handle: dict[str, Any] = {
        "submission_id": "dtaas-00000000-job-404",
        "stdout": str(spec.stdout),
        "stderr": str(spec.stderr),
        "cwd": str(spec.cwd),
        "wall_time_seconds": None,
        "in_place": True,
        "request": {},
    }

    outcome = executor.poll(handle)

    assert outcome is not None and outcome.reason == EndReason.LOST
    assert "Ray has no job dtaas-00000000-job-404" in text(spec.stderr)


# --- restart ---------------------------------------------------------------------------


def test_a_restarted_platform_reattaches_and_gets_the_whole_log_and_the_results(
    make_executor, tmp_path
):
    script = (
        "echo first; while [ ! -e go ]; do sleep 0.05; done; echo result > result.txt; "
        "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line $i; done"
    )
    spec = make_spec(tmp_path, 1, script)
    before = make_executor()
    handle = persisted(before.start(spec))
    wait_until(lambda: printed(before, handle, "first"), message="the job's first line")
    before.close()  # the platform dies; the job runs on

    after = make_executor()
    assert after.find(1) == handle  # also without the handle, e.g. lost in the crash
    assert after.poll(handle) is None
    (spec.cwd / "go").touch()
    outcome = outcome_of(after, handle)

    assert outcome.succeeded
    assert text(spec.stdout) == "first\n" + "".join(f"line {i}\n" for i in range(1, 301))
    assert text(spec.cwd / "result.txt") == "result\n"


def test_a_job_that_ended_while_the_platform_was_down_gets_its_whole_log(
    make_executor, ray_head, tmp_path
):
    spec = make_spec(tmp_path, 1, "echo one; echo two; exit 5")
    before = make_executor()
    handle = persisted(before.start(spec))
    before.close()
    wait_until(
        lambda: (
            httpx.get(
                f"{ray_head.address}/api/jobs/{handle['submission_id']}",
                headers=ray_head.headers,
                timeout=30,  # the dashboard answers slowly on a loaded machine
            ).json()["status"]
            == "FAILED"
        ),
        message="the job's end in Ray",
    )

    outcome = outcome_of(make_executor(), handle)

    assert (outcome.reason, outcome.exit_code) == (EndReason.EXITED, 5)
    assert text(spec.stdout) == "one\ntwo\n"


# --- upload ------------------------------------------------------------------------------


def test_an_uploaded_copy_runs_with_its_paths_and_its_results_stay_on_the_node(
    make_executor, tmp_path
):
    executor = make_executor(shared_dir=None)
    copy = tmp_path / "copy"
    (copy / "lifecycle").mkdir(parents=True)
    (copy / "params.json").write_text('{"speed": 3}\n')
    script = copy / "lifecycle" / "execute"
    script.write_text('#!/bin/sh\ncat "$DTAAS_PARAMS_FILE"; echo result > result.txt; ls\n')
    script.chmod(0o755)
    spec = make_spec(
        tmp_path,
        1,
        "",
        cwd=copy,
        argv=["./lifecycle/execute"],
        env={"DTAAS_PARAMS_FILE": f"{copy}/params.json"},
    )

    outcome = outcome_of(executor, executor.start(spec))

    assert outcome.succeeded, text(spec.stdout)
    assert text(spec.stdout) == '{"speed": 3}\nlifecycle\nparams.json\nresult.txt\n'
    assert not (copy / "result.txt").exists()


# --- the cluster cannot be used ---------------------------------------------------------


def test_an_unreachable_cluster_is_a_clear_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    executor = RayExecutor(address=address, site_id="unreachable")

    with pytest.raises(BackendUnavailable) as unavailable:
        executor.start(make_spec(tmp_path, 1, "echo never"))

    assert str(unavailable.value) == (
        f"the Ray cluster at {address} is unreachable (ConnectionError); "
        "check DTAAS_RAY_ADDRESS and that the cluster's head node runs"
    )


def test_a_wrong_token_is_a_clear_error(ray_head, tmp_path):
    executor = RayExecutor(address=ray_head.address, site_id="token", auth_token="wrong")
    # Checking the nodes (a request for resources) is the first thing that talks to Ray.
    spec = make_spec(tmp_path, 1, "echo never", resources=Resources(cpus=1))
    refused = "refused the platform's token; set DTAAS_RAY_AUTH_TOKEN"

    with pytest.raises(BackendUnavailable, match=refused):
        executor.find(1)
    with pytest.raises(BackendUnavailable, match=refused):
        executor.start(spec)


# --- settings ------------------------------------------------------------------------------


def test_the_ray_executor_needs_the_cluster_address():
    with pytest.raises(ValidationError, match="set DTAAS_RAY_ADDRESS to the Ray dashboard's URL"):
        Settings(executor="ray")


def test_the_ray_address_is_the_dashboard_url():
    with pytest.raises(ValidationError, match="is not the dashboard's URL"):
        Settings(executor="ray", ray_address="127.0.0.1:6379")
    assert Settings(ray_address="http://127.0.0.1:8265/").ray_address == "http://127.0.0.1:8265"


def test_the_site_id_is_made_once_per_data_directory(tmp_path):
    first = site_id_for(tmp_path / "a")

    assert site_id_for(tmp_path / "a") == first
    assert site_id_for(tmp_path / "b") != first
