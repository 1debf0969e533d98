"""The Cluster page (admins): a site on the session's Ray head with a job running there, a
site whose cluster is down, a site without Ray, and a user who may not see it.

The shared ``server`` runs without Ray, so the Ray sites are live servers of their own
(``tests/live.py``) with the settings they need. Screenshots go to the test's ``tmp_path``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from pydantic import SecretStr

from tests.execution.processes import wait_until
from tests.execution.ray_head import RayHead
from tests.factories import PASSWORD
from tests.live import ADMIN, LiveServer, closed_port_url, run_live_server
from tests.web.conftest import PHONE, Server, fill_login_form, sign_in

pytestmark = pytest.mark.browser

API = "/api/v1"
# Prints, then waits (at most a minute) for the file ``data/go`` in its owner's library.
WAITER = """#!/bin/bash
echo "waiting"
for i in $(seq 1200); do [ -e "$DTAAS_WORKSPACE/data/go" ] && break; sleep 0.05; done
echo "went"
"""
# The autoscaler's report of what is in use, which the page shows, is refreshed every few s.
USAGE_TIMEOUT_MS = 20_000


def sign_in_live(page: Page, live: LiveServer) -> None:
    """Sign in to a live server as its admin."""
    page.goto(f"{live.url}/login")
    fill_login_form(page, ADMIN, PASSWORD)
    expect(page).not_to_have_url(re.compile(r"/login"))


@pytest.fixture
def ray_site(tmp_path: Path, ray_head: RayHead) -> Iterator[LiveServer]:
    """A live site whose jobs run on the session's Ray head, in place (shared storage)."""
    data_dir = tmp_path / "site"
    with run_live_server(
        data_dir,
        executor="ray",
        ray_address=ray_head.address,
        ray_auth_token=SecretStr(ray_head.token),
        ray_shared_dir=data_dir.resolve(),
    ) as live:
        yield live


@pytest.fixture
def ray_api(ray_site: LiveServer) -> Iterator[httpx.Client]:
    """The Ray site's API as its admin."""
    with httpx.Client(
        base_url=f"{ray_site.url}{API}",
        headers={"Authorization": f"Bearer {ray_site.token_for(ADMIN)}"},
        trust_env=False,
    ) as api:
        yield api


def start_waiting_job(live: LiveServer, api: httpx.Client) -> tuple[int, int]:
    """An instance of a waiting DT of the admin's, running execute: its id and the job's."""
    twin = live.add_twin(f"{ADMIN}/digital_twins/waiter", scripts={"execute": WAITER})
    created = api.post("/instances", json={"twin_path": twin})
    assert created.status_code == 201, created.text
    instance_id: int = created.json()["id"]
    queued = api.post(f"/instances/{instance_id}/phases", json={"phase": "execute"})
    assert queued.status_code == 202, queued.text
    job_id: int = queued.json()["id"]
    wait_until(
        lambda: api.get(f"/jobs/{job_id}/logs").text == "waiting\n",
        message="the job running on Ray",
    )
    return instance_id, job_id


@pytest.mark.xdist_group("ray")
def test_an_admin_sees_the_cluster_and_where_a_job_runs(
    page: Page, ray_site: LiveServer, ray_api: httpx.Client, ray_head: RayHead, tmp_path: Path
) -> None:
    instance_id, job_id = start_waiting_job(ray_site, ray_api)
    sign_in_live(page, ray_site)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Cluster", exact=True)).to_have_count(1)
    page.goto(f"{ray_site.url}/admin/cluster")

    expect(page.locator("#cluster-configured")).to_have_text("configured")
    expect(page.locator("#cluster-dashboard")).to_have_attribute("href", ray_head.address)
    expect(page.locator("#cluster-default")).to_contain_text("Ray")
    expect(page.locator("#cluster-state")).to_have_text("reachable")
    expect(page.locator("#cluster-nodes .tile-value")).to_have_text("1")
    cpus = page.locator("#cluster-cpus")
    expect(cpus.locator(".tile-value")).to_have_text(
        f"1 of {ray_head.num_cpus} used", timeout=USAGE_TIMEOUT_MS
    )
    expect(cpus.locator(".tile-detail")).to_have_text(f"{ray_head.num_cpus - 1} free")
    expect(page.locator("#cluster-gpus .tile-value")).to_have_text("none")
    expect(page.locator("#cluster-memory_bytes .tile-value")).to_have_text(
        re.compile(r"^\d+\.\d GiB of \d+\.\d GiB used$")
    )
    node = page.locator("#cluster-node-rows tr.node-row")
    expect(node).to_have_count(1)
    expect(node.locator("td.primary")).to_contain_text("127.0.0.1")
    expect(node.locator("td.primary")).to_contain_text("head")
    expect(node.locator("td[data-label='CPUs used']")).to_have_text(f"1 of {ray_head.num_cpus}")
    expect(page.locator("#cluster-problem")).to_be_empty()
    page.screenshot(path=tmp_path / "cluster-ray.png", full_page=True)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.screenshot(path=tmp_path / "cluster-ray-phone.png", full_page=True)

    page.goto(f"{ray_site.url}/instances/{instance_id}")
    row = page.locator(f"#instance-jobs tr.job-row[data-job-id='{job_id}']")
    expect(row.locator("td[data-label='Executor']")).to_have_text("ray")

    go = ray_site.files_dir / ADMIN / "data" / "go"
    go.parent.mkdir(parents=True, exist_ok=True)
    go.touch()
    wait_until(
        lambda: ray_api.get(f"/jobs/{job_id}").json()["state"] == "succeeded",
        message="the job ending",
    )
    assert ray_api.get(f"/jobs/{job_id}/logs").text == "waiting\nwent\n"


def test_a_cluster_that_is_down_shows_as_unreachable_with_the_reason(
    page: Page, tmp_path: Path
) -> None:
    with closed_port_url() as url, run_live_server(tmp_path / "site", ray_address=url) as live:
        sign_in_live(page, live)
        page.goto(f"{live.url}/admin/cluster")

        expect(page.locator("#cluster-configured")).to_have_text("configured")
        expect(page.locator("#cluster-default")).to_contain_text("this machine")
        # Well within the page's default expect timeout: the API gives up on a dead cluster.
        expect(page.locator("#cluster-state")).to_have_text("unreachable", timeout=5_000)
        expect(page.locator("#cluster-problem")).to_have_text(
            f"The Ray cluster at {url} is unreachable (ConnectError); "
            "check DTAAS_RAY_ADDRESS and that the cluster's head node runs."
        )
        expect(page.locator("#cluster-node-rows")).to_have_text("The cluster did not answer.")
        expect(page.locator("#cluster-cpus .tile-value")).to_have_text(
            "\u2013"
        )  # an en dash: no value
        page.screenshot(path=tmp_path / "cluster-down.png", full_page=True)


def test_without_ray_the_page_says_how_to_set_it_up(page: Page, server: Server) -> None:
    sign_in(page, server, "admin")
    page.goto(f"{server.url}/admin/cluster")

    expect(page.get_by_role("heading", level=1)).to_have_text("Cluster")
    expect(page.locator("#cluster-configured")).to_have_text("not configured")
    expect(page.locator("#cluster-howto")).to_contain_text("DTAAS_RAY_ADDRESS")
    expect(page.locator("#cluster-status")).to_have_count(0)


def test_a_user_gets_a_403_page_and_no_cluster_link(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Account")).to_have_count(1)
    expect(nav.get_by_role("link", name="Cluster", exact=True)).to_have_count(0)

    response = page.goto(f"{server.url}/admin/cluster")

    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("You don't have access")
    expect(page.get_by_role("alert")).to_have_text(
        "Your role 'user' does not allow 'view_metrics'; ask an administrator for a role that does."
    )
