"""The Explore page on a platform pointed at the machine's real services: Mosquitto
(127.0.0.1:1883), RabbitMQ (5672) and PostgreSQL (5432). The example DT publishes to the real
Mosquitto, its telemetry reaches the chart live and its CSV is previewed.

The broker is shared with every other test (and is anonymous, so it isolates nothing): the
instance's topic is unique by its user, whom this module creates.
Screenshots go to the test's temporary folder (``explore-mosquitto.png``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import (
    TEST_PASSWORD,
    Server,
    api_token,
    create_user,
    sign_in,
    start_platform,
)
from tests.web.test_pages_explore import _deploy, _wait_for_more_points, job_end

pytestmark = pytest.mark.browser

MOSQUITTO = "mqtt://127.0.0.1:1883"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672/"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_platform(
        tmp_path_factory.mktemp("dtaas-services"),
        MQTT_URL=MOSQUITTO,
        AMQP_URL=RABBITMQ,
        POSTGRES_URL=POSTGRES,
    ) as running:
        yield running


@pytest.fixture
def explorer(site: Server) -> str:
    return create_user(site, api_token(site, "admin"), prefix="mosq")


@pytest.fixture
def api(site: Server, explorer: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{site.url}/api/v1",
        headers={"Authorization": f"Bearer {api_token(site, explorer, TEST_PASSWORD)}"},
        timeout=30,
        trust_env=False,
    ) as client:
        yield client


def test_the_services_page_shows_the_machines_brokers_and_database_up(
    page: Page, site: Server, explorer: str
) -> None:
    sign_in(page, site, explorer, TEST_PASSWORD)
    page.goto(f"{site.url}/services")
    for name, address in (
        ("mqtt", "127.0.0.1:1883"),
        ("amqp", "127.0.0.1:5672"),
        ("postgres", "127.0.0.1:5432"),
    ):
        card = page.locator(f"#service-{name}")
        expect(card).to_have_attribute("data-source", "settings")
        expect(card.locator(".service-facts")).to_contain_text(address)
        expect(card.locator(".badge.health")).to_have_text("up", timeout=15_000)
    expect(page.locator("#service-amqp")).not_to_contain_text("guest:guest")


def test_the_example_publishes_to_mosquitto_and_its_chart_and_csv_show_it(
    page: Page, site: Server, explorer: str, api: httpx.Client, tmp_path: Path
) -> None:
    instance_id = _deploy(api, steps=1500, step_delay=0.01)
    job = api.post(f"/instances/{instance_id}/phases", json={"phase": "execute"})
    assert job.status_code == 202, job.text
    sign_in(page, site, explorer, TEST_PASSWORD)

    page.goto(f"{site.url}/instances/{instance_id}/explore")
    expect(page.locator("#live-status")).to_have_text("live")
    first = _wait_for_more_points(page, "x", 0)
    later = _wait_for_more_points(page, "x", first)
    assert later > first
    page.screenshot(path=str(tmp_path / "explore-mosquitto.png"), full_page=True)

    assert job_end(api, job.json()["id"]) == "succeeded"
    log = api.get(f"/jobs/{job.json()['id']}/logs").text
    assert f"publishing to dtaas/{explorer}/{instance_id}/telemetry" in log

    page.locator("#results-refresh").click()
    row = page.locator('tr.result-row[data-path="results/trajectory.csv"]')
    row.get_by_role("button", name="Preview").click()
    preview = page.locator("#result-preview")
    expect(preview.locator("table.csv-table thead th")).to_have_text(["step", "t", "x", "v"])
    expect(preview.locator(".csv-plot canvas")).to_have_count(1)
    # Every step reached the platform through Mosquitto and was stored.
    series = api.get(f"/instances/{instance_id}/telemetry", params={"field": "x"}).json()
    assert series["raw_points"] == 1500, series["raw_points"]


def test_the_rabbitmq_example_runs_on_the_machines_broker_and_its_csv_is_previewed(
    page: Page, site: Server, explorer: str, api: httpx.Client
) -> None:
    response = api.post(
        "/instances",
        json={
            "twin_path": "common/digital_twins/tank-thermostat",
            "values": {"steps": 200, "step_delay": 0},
        },
    )
    assert response.status_code == 201, response.text
    instance_id = response.json()["id"]
    job = api.post(f"/instances/{instance_id}/phases", json={"phase": "execute"}).json()
    state = job_end(api, job["id"])
    assert state == "succeeded", api.get(f"/jobs/{job['id']}/logs?stream=stderr").text

    sign_in(page, site, explorer, TEST_PASSWORD)
    page.goto(f"{site.url}/instances/{instance_id}/explore")
    row = page.locator('tr.result-row[data-path="results/tank.csv"]')
    row.get_by_role("button", name="Preview").click()
    preview = page.locator("#result-preview")
    expect(preview.locator("table.csv-table thead th")).to_have_text(
        ["time_s", "temperature_c", "heater"]
    )
    expect(preview.locator("table.csv-table tbody tr")).to_have_count(100)
    # The thermostat answered over RabbitMQ: the heater was switched on at some point.
    heater = preview.locator("table.csv-table tbody tr td:nth-child(3)")
    assert "1" in heater.all_inner_texts()
