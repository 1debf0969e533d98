"""Saving a running instance and re-spawning it from its page, in Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Server, sign_in, unique_name
from tests.web.test_pages_instances import JOB_TIMEOUT_MS, _deploy, _wait_for_state

pytestmark = pytest.mark.browser

OSCILLATOR = "common/digital_twins/mass-spring-damper"


def _terminate(page: Page) -> None:
    page.locator("#terminate-button").click()
    _wait_for_state(page, "terminated")


def test_a_running_instance_is_saved_and_respawned_from_its_page(
    page: Page, server: Server, tmp_path: Path
) -> None:
    sign_in(page, server, "alice")
    page.on("dialog", lambda dialog: dialog.accept())
    name = unique_name("osc-")
    original = _deploy(page, server, OSCILLATOR, name)
    expect(page.locator("#instance-snapshots tr.empty")).to_contain_text("No snapshots yet")

    page.locator("#phase-execute").click()
    _wait_for_state(page, "busy")
    expect(page.locator("#job-log")).to_contain_text("step=40 ", timeout=JOB_TIMEOUT_MS)
    page.locator("#save-button").click()
    row = page.locator("#instance-snapshots tr.snapshot-row").first
    expect(row).to_have_attribute("data-state", "ready", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#instance-state")).to_have_text("busy")  # it went on running
    saved_as = re.compile(rf"^{name} \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d")
    expect(row.locator("td.primary")).to_contain_text(saved_as)
    expect(page.locator("#save-button")).to_be_enabled()
    page.screenshot(path=str(tmp_path / "saved.png"), full_page=True)

    row.get_by_role("button", name="Re-spawn").click()
    expect(page).to_have_url(re.compile(rf"/instances/(?!{original}$)\d+$"))
    respawned = int(page.url.rsplit("/", 1)[1])
    expect(page.locator("h1 .instance-name")).to_have_text(
        re.compile(rf"^{name} \d{{4}}-\d\d-\d\d \S+ \(re-spawned\)$")
    )
    expect(page.locator("#job-log")).to_contain_text(
        re.compile(r"restored at step=\d+"), timeout=JOB_TIMEOUT_MS
    )
    expect(page.locator("#job-log")).to_contain_text(re.compile(r"step=\d+ t="))
    page.screenshot(path=str(tmp_path / "respawned.png"), full_page=True)

    _terminate(page)
    page.goto(f"{server.url}/instances/{original}")
    _terminate(page)
    assert respawned != original
