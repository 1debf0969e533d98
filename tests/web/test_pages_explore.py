"""The Explore page on the platform started as the README says (embedded MQTT broker): the
example DT runs and its telemetry reaches the chart live, its CSV is previewed; points
published by a test reach the chart without a reload; another instance is overlaid.

Screenshots go to the test's temporary folder (``explore-live.png``, ``explore-compare.png``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Page, expect

from dtaas.config import Settings
from dtaas.services import mqtt_names
from tests.web.conftest import TEST_PASSWORD, Server, api_token, create_user, sign_in

pytestmark = pytest.mark.browser

EXAMPLE = "common/digital_twins/mass-spring-damper"
CHART_DEADLINE_MS = 30_000  # the job is queued, started, connects and publishes
JOB_DEADLINE_SECONDS = 90.0
POINTS = "(field) => window.dtaasExplore?.charts.get(field)?.plot?.data[0].length ?? 0"


@pytest.fixture
def explorer(server: Server, admin_token: str) -> str:
    """A user of their own (the server is shared by the session's tests)."""
    return create_user(server, admin_token, prefix="explorer")


@pytest.fixture
def api(server: Server, explorer: str) -> Iterator[httpx.Client]:
    token = api_token(server, explorer, TEST_PASSWORD)
    with httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        trust_env=False,
    ) as client:
        yield client


def _deploy(api: httpx.Client, **values: object) -> int:
    response = api.post("/instances", json={"twin_path": EXAMPLE, "values": values})
    assert response.status_code == 201, response.text
    instance_id: int = response.json()["id"]
    return instance_id


def _broker(server: Server, api: httpx.Client) -> mqtt.Client:
    """A paho client of the platform's own (embedded) broker, as its Services API names it,
    signed in as the platform (the broker refuses anonymous clients)."""
    url = api.get("/services/mqtt").json()["url"]
    parts = urlsplit(url)
    assert server.data_dir is not None
    site = Settings(data_dir=server.data_dir, secret_key=None)  # the server's own secret
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"explore-test-{time.time_ns()}")
    client.username_pw_set(mqtt_names.platform_username(site), mqtt_names.platform_password(site))
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    return client


def _publish(client: mqtt.Client, topic: str, payload: str) -> None:
    info = client.publish(topic, payload, qos=1)
    info.wait_for_publish(5)
    assert info.is_published()


def job_end(api: httpx.Client, job_id: int) -> str:
    """Wait for a job to end; its final state ("succeeded" or "failed")."""
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    while (state := api.get(f"/jobs/{job_id}").json()["state"]) not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        time.sleep(0.5)
    return str(state)


def _points(page: Page, field: str) -> int:
    count: int = page.evaluate(POINTS, field)
    return count


def _wait_for_more_points(page: Page, field: str, than: int) -> int:
    page.wait_for_function(f"({POINTS})('{field}') > {than}", timeout=CHART_DEADLINE_MS)
    return _points(page, field)


def test_the_example_dts_telemetry_reaches_the_chart_live_and_its_csv_is_previewed(
    page: Page, server: Server, explorer: str, api: httpx.Client, tmp_path: Path
) -> None:
    instance_id = _deploy(api, steps=1500, step_delay=0.01)
    job = api.post(f"/instances/{instance_id}/phases", json={"phase": "execute"})
    assert job.status_code == 202, job.text
    sign_in(page, server, explorer, TEST_PASSWORD)

    page.goto(f"{server.url}/instances/{instance_id}")
    page.get_by_role("link", name="Explore telemetry and results").click()

    expect(page).to_have_url(f"{server.url}/instances/{instance_id}/explore")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Explore")
    expect(page.locator("#live-status")).to_have_text("live")
    first = _wait_for_more_points(page, "x", 0)
    later = _wait_for_more_points(page, "x", first)  # it grows while the page stays open
    assert later > first
    expect(page.locator('[data-count-for="x"]')).to_contain_text("points")
    page.screenshot(path=str(tmp_path / "explore-live.png"), full_page=True)

    assert job_end(api, job.json()["id"]) == "succeeded"
    page.locator("#results-refresh").click()
    row = page.locator('tr.result-row[data-path="results/trajectory.csv"]')
    row.get_by_role("button", name="Preview").click()

    preview = page.locator("#result-preview")
    expect(page.locator("#preview-card")).to_be_visible()
    expect(preview.locator("table.csv-table thead th")).to_have_text(["step", "t", "x", "v"])
    expect(preview.locator("table.csv-table tbody tr")).to_have_count(100)
    expect(preview.locator(".csv-plot canvas")).to_have_count(1)
    assert (
        page.evaluate("document.querySelector('#result-preview .csv-plot').plot.data[0].length")
        > 100
    )
    expect(page.locator("#results-zip")).to_be_visible()
    page.screenshot(path=str(tmp_path / "explore-results.png"), full_page=True)


def test_published_points_appear_without_reload_and_another_instance_is_overlaid(
    page: Page, server: Server, explorer: str, api: httpx.Client, tmp_path: Path
) -> None:
    shown, other = _deploy(api), _deploy(api)
    broker = _broker(server, api)
    try:
        now = time.time()
        for n in range(50):
            _publish(
                broker, f"dtaas/{explorer}/{other}/sensor", f'{{"x": {n % 10}, "t": {now + n}}}'
            )
        sign_in(page, server, explorer, TEST_PASSWORD)
        page.goto(f"{server.url}/instances/{shown}/explore")
        expect(page.locator("#live-status")).to_have_text("live")
        assert _points(page, "x") == 0
        expect(page.locator('[data-count-for="x"]')).to_have_text("no points yet")

        for n in range(20):
            _publish(broker, f"dtaas/{explorer}/{shown}/telemetry", f'{{"x": {n}, "v": 1}}')
        assert _wait_for_more_points(page, "x", 19) == 20

        page.locator("#compare-select").select_option(str(other))
        page.wait_for_function(
            # uPlot.join leaves the times only one instance has empty (undefined) in the other
            "(plot => plot.series.length === 5 && plot.data[4].filter(v => v != null).length"
            " === 50)(window.dtaasExplore.charts.get('x').plot)",
            timeout=CHART_DEADLINE_MS,
        )
        expect(page.locator("#compare-help")).to_be_visible()
        _publish(broker, f"dtaas/{explorer}/{shown}/telemetry", '{"x": 100}')
        # Still live while comparing (uPlot's rows now join both instances' times).
        page.wait_for_function(
            "window.dtaasExplore.charts.get('x').series.t.length === 21", timeout=CHART_DEADLINE_MS
        )
        page.screenshot(path=str(tmp_path / "explore-compare.png"), full_page=True)
    finally:
        broker.disconnect()
        broker.loop_stop()

    csv = api.get(f"/instances/{shown}/telemetry.csv", params={"field": "x"})
    assert csv.text.count("\n") == 1 + 21
