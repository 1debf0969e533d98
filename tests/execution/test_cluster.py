"""The admin API of the Ray cluster: its nodes and resources from a real head, or why not.

``GET /api/v1/admin/cluster`` against the session's Ray head (what it has, and what a
running job holds), a site without Ray, and clusters that refuse, are down or hang: those
are reported within seconds, never raised.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session

from dtaas import db
from dtaas.api.app import create_app
from dtaas.config import Settings
from dtaas.execution.cluster import READ_TIMEOUT_SECONDS
from dtaas.execution.ray import RayExecutor, RayJobSpec, Resources
from tests.execution.processes import assert_no_processes_of, wait_until
from tests.execution.ray_head import RayHead
from tests.factories import bearer
from tests.live import closed_port_url

URL = "/api/v1/admin/cluster"
GiB = 1024**3

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_client(settings: Settings, session: Session) -> Iterator[MakeClient]:
    """``make_client(**setting_changes)``: the app of a site with those settings."""
    with ExitStack() as stack:

        def make(**changes: Any) -> TestClient:
            app = create_app(settings.model_copy(update=changes))
            app.dependency_overrides[db.get_session] = lambda: session
            return stack.enter_context(TestClient(app, base_url="http://127.0.0.1"))

        yield make


def on_ray(head: RayHead, **changes: Any) -> dict[str, Any]:
    """The settings of a site whose Ray cluster is ``head``."""
    return {"ray_address": head.address, "ray_auth_token": SecretStr(head.token), **changes}


@contextmanager
def hanging_url() -> Iterator[str]:
    """A loopback URL that takes connections (the kernel's backlog) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class NotRay(BaseHTTPRequestHandler):
    """A web server that is not Ray's dashboard: 404 for everything."""

    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test's output free of the server's access log."""


@contextmanager
def not_ray_url() -> Iterator[str]:
    """The URL of a loopback web server that is not a Ray dashboard."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotRay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def read(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    response = client.get(URL, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- a real head ----------------------------------------------------------------------------


@pytest.mark.xdist_group("ray")
def test_an_admin_reads_the_nodes_and_resources_of_the_cluster(
    make_client, ray_head, session, settings, admin
):
    client = make_client(**on_ray(ray_head))

    cluster = read(client, bearer(session, settings, admin))

    assert (cluster["configured"], cluster["reachable"], cluster["problem"]) == (True, True, None)
    assert cluster["dashboard_url"] == ray_head.address
    assert cluster["default_executor"] == "local"
    assert (cluster["nodes_alive"], cluster["nodes_dead"]) == (1, 0)
    assert cluster["cpus"]["total"] == ray_head.num_cpus
    assert cluster["cpus"]["free"] == cluster["cpus"]["total"] - cluster["cpus"]["used"]
    assert cluster["gpus"] == {"total": 0, "used": 0, "free": 0}  # started with --num-gpus=0
    assert cluster["memory_bytes"]["total"] > 0.1 * GiB
    [node] = cluster["nodes"]
    assert (node["address"], node["is_head"], node["alive"]) == ("127.0.0.1", True, True)
    assert node["cpus"] == cluster["cpus"]


@pytest.mark.xdist_group("ray")
def test_a_running_job_shows_as_used_cpus(
    make_client, ray_head, session, settings, admin, tmp_path
):
    client = make_client(**on_ray(ray_head))
    headers = bearer(session, settings, admin)
    executor = RayExecutor(
        address=ray_head.address,
        site_id=secrets.token_hex(4),
        auth_token=ray_head.token,
        shared_dir=tmp_path,
        grace_seconds=1,
    )
    work = tmp_path / "job"
    work.mkdir()
    spec = RayJobSpec(
        job_id=1,
        argv=["/bin/sh", "-c", "echo ready; while [ ! -e go ]; do sleep 0.05; done"],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "DTAAS_TEST_ROOT": f"{tmp_path}/"},
        stdout=tmp_path / "job.out",
        stderr=tmp_path / "job.err",
        resources=Resources(cpus=1),
    )
    handle = executor.start(spec)
    try:
        wait_until(lambda: "ready" in text(spec.stdout), message="the job running")

        def one_cpu_used() -> dict[str, Any] | None:
            cluster = read(client, headers)
            return cluster if cluster["cpus"]["used"] == 1 else None

        # The autoscaler's report, which the usage comes from, is refreshed every few s.
        busy = wait_until(one_cpu_used, message="the job's CPU counted as used")
    finally:
        (work / "go").touch()
        wait_until(lambda: executor.poll(handle), message="the job's end")
        executor.close()
    cpus = ray_head.num_cpus
    assert busy["cpus"] == {"total": cpus, "used": 1, "free": cpus - 1}
    assert busy["nodes"][0]["cpus"] == busy["cpus"]
    assert_no_processes_of(tmp_path)


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.xdist_group("ray")
def test_a_wrong_token_is_reported_with_the_setting_to_fix(
    make_client, ray_head, session, settings, admin
):
    client = make_client(**on_ray(ray_head, ray_auth_token=SecretStr("wrong")))

    cluster = read(client, bearer(session, settings, admin))

    assert (cluster["configured"], cluster["reachable"]) == (True, False)
    assert cluster["problem"] == (
        f"The Ray cluster at {ray_head.address} refused the platform's token; set "
        "DTAAS_RAY_AUTH_TOKEN to the token the cluster was started with."
    )
    assert (cluster["nodes"], cluster["cpus"]) == ([], None)


# --- who may ask ----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["alice", "viewer"])
def test_only_admins_may_read_the_cluster(make_client, request, session, settings, who):
    client = make_client(ray_address="http://127.0.0.1:9")  # never asked
    user = request.getfixturevalue(who)

    response = client.get(URL, headers=bearer(session, settings, user))

    assert response.status_code == 403
    [error] = response.json()["detail"]
    assert error["type"] == "permission_denied"
    assert error["msg"] == (
        f"Your role {user.role.value!r} does not allow 'view_metrics'; "
        "ask an administrator for a role that does."
    )


def test_without_credentials_it_is_401(make_client):
    response = make_client().get(URL)

    assert response.status_code == 401
    assert response.json()["detail"][0]["type"] == "not_authenticated"


# --- no cluster, or none that answers --------------------------------------------------------


def test_a_site_without_ray_says_it_is_not_configured(make_client, session, settings, admin):
    cluster = read(make_client(), bearer(session, settings, admin))

    assert {key: cluster[key] for key in ("configured", "reachable", "dashboard_url")} == {
        "configured": False,
        "reachable": False,
        "dashboard_url": None,
    }
    assert (cluster["problem"], cluster["nodes"], cluster["cpus"]) == (None, [], None)


def test_a_cluster_that_is_down_is_reported_unreachable_at_once(
    make_client, session, settings, admin
):
    headers = bearer(session, settings, admin)
    with closed_port_url() as url:
        cluster = read(make_client(ray_address=url), headers)

    assert (cluster["configured"], cluster["reachable"], cluster["dashboard_url"]) == (
        True,
        False,
        url,
    )
    # A refused connection, not the timeout: no wait (a timing bound would flake under load).
    assert cluster["problem"] == (
        f"The Ray cluster at {url} is unreachable (ConnectError); "
        "check DTAAS_RAY_ADDRESS and that the cluster's head node runs."
    )


def test_a_cluster_that_never_answers_is_reported_after_the_timeout(
    make_client, session, settings, admin
):
    headers = bearer(session, settings, admin)
    with hanging_url() as url:
        client = make_client(ray_address=url)
        started = time.monotonic()
        cluster = read(client, headers)
        took = time.monotonic() - started

    assert cluster["reachable"] is False
    assert cluster["problem"] == (
        f"The Ray cluster at {url} did not answer within {READ_TIMEOUT_SECONDS:g} s; "
        "check that its head node runs and is not overloaded."
    )
    # Bounded by the read timeout (Ray's own client would wait for ever); the slack is
    # for a loaded test machine.
    assert READ_TIMEOUT_SECONDS <= took < READ_TIMEOUT_SECONDS + 5


def test_an_address_that_is_not_a_ray_dashboard_is_reported(make_client, session, settings, admin):
    headers = bearer(session, settings, admin)
    with not_ray_url() as url:
        cluster = read(make_client(ray_address=url), headers)

    assert cluster["reachable"] is False
    assert cluster["problem"] == (
        f"The Ray cluster at {url} answered /api/v0/nodes with HTTP 404 and no data; "
        "check that DTAAS_RAY_ADDRESS is the dashboard's URL (port 8265)."
    )
