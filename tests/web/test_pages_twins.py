"""The Digital Twins pages: cards, a DT's page, creating and copying DTs, configurations.

alice works in her own library and reads ``common``. The server is shared by the session,
so every DT a test creates has a name nobody else uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, ViewportSize, expect

from tests.web.conftest import DESKTOP, PHONE, Server, sign_in, unique_name

pytestmark = pytest.mark.browser

HELLO_WORLD = "common/digital_twins/hello-world"
BROKEN_MANIFEST = """manifest: 1
name: broken
parameters:
  speed:
    type: integer
    default: 3
resources:
  cpus: 2
"""


def _csrf(page: Page) -> str:
    token: str = page.evaluate(
        "JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']"
    )
    assert token
    return token


def _view_url(server: Server, path: str) -> str:
    return f"{server.url}/twins/view?path={quote(path, safe='/')}"


def _create_twin(page: Page, server: Server, **body: str) -> str:
    """A new DT of the page's user through the API; returns its path."""
    response = page.request.post(
        f"{server.url}/api/v1/twins", data=body, headers={"X-CSRF-Token": _csrf(page)}
    )
    assert response.status == 201, response.text()
    path: str = response.json()["path"]
    return path


def _write_broken_twin(page: Page, server: Server) -> str:
    """A DT folder holding only a dt.yaml with two mistakes, written through the Library API."""
    path = f"alice/digital_twins/{unique_name('broken-')}"
    headers = {"X-CSRF-Token": _csrf(page)}
    response = page.request.post(
        f"{server.url}/api/v1/library/folders", data={"path": path}, headers=headers
    )
    assert response.status == 201, response.text()
    response = page.request.put(
        f"{server.url}/api/v1/library/file?path={quote(path + '/dt.yaml')}",
        data=BROKEN_MANIFEST.encode(),
        headers={**headers, "Content-Type": "text/plain; charset=utf-8", "If-Match": "*"},
    )
    assert response.ok, response.text()
    return path


def _assert_no_sideways_scroll(page: Page, width: int) -> None:
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    # Only for the message: the first elements that reach past the right edge.
    too_wide = page.evaluate(
        """(width) => [...document.querySelectorAll("body *")]
            .filter((element) => element.getBoundingClientRect().right > width + 1)
            .slice(0, 4)
            .map((element) => `${element.tagName.toLowerCase()}.${element.className}`)""",
        width,
    )
    assert scroll_width <= width, f"{page.url} is {scroll_width}px wide; too wide: {too_wide}"


def _configurations(page: Page, server: Server, path: str) -> list[dict[str, Any]]:
    response = page.request.get(f"{server.url}/api/v1/twins/configurations?path={quote(path)}")
    assert response.ok, response.text()
    found: list[dict[str, Any]] = response.json()
    return found


def _card(page: Page, path: str) -> Locator:
    return page.locator(f'article.twin-card[data-path="{path}"]')


def test_alice_creates_a_dt_and_saves_a_configuration_checked_field_by_field(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/twins")
    name = unique_name("sim-")
    form = page.locator("#new-twin-form")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("a template").check()
    form.get_by_label("Template", exact=True).select_option("python-simulation")
    form.get_by_role("button", name="Create").click()

    path = f"alice/digital_twins/{name}"
    expect(page).to_have_url(_view_url(server, path))
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    config = page.locator("#config-form")
    setpoint = config.get_by_label("setpoint_c")
    expect(setpoint).to_have_value("40")  # the manifest's default
    expect(setpoint).to_have_attribute("max", "95")
    config.get_by_label("Configuration name").fill("hot water")
    setpoint.fill("150")
    config.get_by_role("button", name="Save configuration").click()

    expect(setpoint).to_have_attribute("aria-invalid", "true")
    error = page.locator("#param-setpoint_c-error")
    expect(error).to_have_text("must be at most 95")
    expect(setpoint).to_have_attribute("aria-describedby", re.compile("param-setpoint_c-error"))
    expect(page.locator("#config-form [aria-invalid='true']")).to_have_count(1)
    expect(config.get_by_label("Configuration name")).to_have_value("hot water")
    expect(page.locator("tr.configuration")).to_have_count(0)
    assert _configurations(page, server, path) == []

    setpoint.fill("60")
    config.get_by_role("button", name="Save configuration").click()
    expect(page.locator("#config-notice")).to_have_text("Configuration 'hot water' saved.")
    expect(error).to_have_count(0)
    row = page.locator('tr.configuration[data-name="hot water"]')
    expect(row).to_contain_text("setpoint_c=60.0")
    [saved] = _configurations(page, server, path)
    assert saved["name"] == "hot water"
    assert saved["values"] == {
        "duration_s": 3600,
        "step_s": 1.0,
        "heater_power_w": 1500.0,
        "setpoint_c": 60.0,
    }


def test_edit_loads_a_configuration_and_delete_asks_first(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")
    path = _create_twin(page, server, name=unique_name("edit-"), template="python-simulation")
    page.goto(_view_url(server, path))
    config = page.locator("#config-form")
    config.get_by_label("Configuration name").fill("slow")
    config.get_by_label("step_s").fill("0.5")
    config.get_by_role("button", name="Save configuration").click()
    expect(page.locator('tr.configuration[data-name="slow"]')).to_be_visible()

    page.get_by_role("button", name="Edit slow").click()
    expect(page.locator("#config-form-heading")).to_have_text("Edit “slow”")
    expect(config.get_by_label("step_s")).to_have_value("0.5")
    config.get_by_label("Configuration name").fill("slower")
    config.get_by_label("step_s").fill("0.25")
    config.get_by_role("button", name="Save changes").click()
    expect(page.locator("#config-notice")).to_be_visible()
    [saved] = _configurations(page, server, path)
    assert (saved["name"], saved["values"]["step_s"]) == ("slower", 0.25)

    messages: list[str] = []

    def accept(dialog: Dialog) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Delete slower").click()
    expect(page.locator("tr.configuration")).to_have_count(0)
    assert messages == ['Delete the configuration "slower"? This cannot be undone.']
    assert _configurations(page, server, path) == []


def test_text_in_a_number_field_is_an_inline_error_not_a_server_error(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    path = _create_twin(page, server, name=unique_name("nan-"), template="python-simulation")
    page.goto(_view_url(server, path))
    # What a browser cannot send from a number field, another client can: the server says
    # which field is wrong, next to it.
    response = page.request.post(
        f"{server.url}/twins/configurations?path={quote(path)}",
        form={"name": "typo", "values.setpoint_c": "warm", "values.duration_s": "1.5"},
        headers={"X-CSRF-Token": _csrf(page), "HX-Request": "true"},
    )
    assert response.status == 422
    assert "&#39;warm&#39; is not a number" in response.text()
    assert "&#39;1.5&#39; is not a whole number" in response.text()
    assert _configurations(page, server, path) == []

    # In the browser, text the number field cannot hold is caught before it is sent.
    setpoint = page.locator("#config-form").get_by_label("setpoint_c")
    setpoint.fill("")
    setpoint.press_sequentially("4e")
    page.locator("#config-form").get_by_label("Configuration name").fill("typo")
    page.get_by_role("button", name="Save configuration").click()
    expect(page.locator("#param-setpoint_c-error")).to_have_text(
        "This is not a number; write e.g. 12.5."
    )
    expect(setpoint).to_have_attribute("aria-invalid", "true")
    assert _configurations(page, server, path) == []


def test_the_reference_hello_world_is_a_valid_card_with_its_phases(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/twins")
    card = _card(page, HELLO_WORLD)
    expect(card.get_by_role("heading", name="hello-world")).to_be_visible()
    expect(card.locator("ul.phases li")).to_have_text(["create", "execute", "terminate", "clean"])
    expect(card.locator(".twin-validity")).to_have_text("valid")
    expect(card.get_by_text("no dt.yaml")).to_be_visible()
    expect(card.locator(".twin-description")).to_contain_text("The smallest digital twin")

    card.get_by_role("button", name="Open hello-world").click()
    expect(page).to_have_url(_view_url(server, HELLO_WORLD))
    expect(page.locator("#problems")).to_have_count(0)
    expect(page.locator("#files")).to_contain_text("lifecycle/execute")
    link = page.locator("#files a", has_text="lifecycle/execute")
    expect(link).to_have_attribute(
        "href",
        "/library?kind=digital_twins&scope=common&path=common/digital_twins/hello-world/lifecycle",
    )
    page.get_by_role("button", name="Dry run").click()
    expect(page.locator("#plan .plan")).to_have_attribute("data-ready", "true")
    expect(page.locator("#plan")).to_contain_text("valid passed: no errors")


def test_a_broken_manifest_shows_errors_on_the_card_and_positions_on_the_page(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/twins")
    path = _write_broken_twin(page, server)

    page.goto(f"{server.url}/twins")
    card = _card(page, path)
    # The two manifest errors, and no lifecycle/ folder; the missing description warns.
    expect(card.locator(".twin-validity")).to_have_text("3 errors 1 warning")
    expect(card.locator(".badge.invalid")).to_have_text("3 errors")

    page.goto(_view_url(server, path))
    problems = page.locator("#problems li")
    expect(problems).to_have_count(4)
    expect(problems.nth(0)).to_contain_text("error")
    expect(problems.nth(0).locator(".where")).to_have_text("dt.yaml:5:11")
    expect(problems.nth(0)).to_contain_text("`integer` is not allowed")
    expect(problems.nth(1).locator(".where")).to_have_text("dt.yaml:8:3")
    expect(problems.nth(1)).to_contain_text("unknown key `cpus` — did you mean `cpu`?")
    expect(page.locator("#problems li.severity-warning .where")).to_have_text("description.md")


def test_copying_a_dt_works_and_a_taken_name_is_an_inline_error(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/twins")
    name = unique_name("copy-")
    form = page.locator("#new-twin-form")
    expect(form.get_by_label("Copy of", exact=True)).to_be_hidden()
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("a copy of a DT").check()
    form.get_by_label("Copy of", exact=True).select_option(HELLO_WORLD)
    form.get_by_role("button", name="Create").click()

    path = f"alice/digital_twins/{name}"
    expect(page).to_have_url(_view_url(server, path))
    expect(page.locator(".twin-aside ul.phases li")).to_have_text(
        ["create", "execute", "terminate", "clean"]
    )
    page.goto(f"{server.url}/twins")
    expect(_card(page, path).locator(".twin-validity")).to_have_text("valid")

    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("a copy of a DT").check()
    form.get_by_label("Copy of", exact=True).select_option(HELLO_WORLD)
    form.get_by_role("button", name="Create").click()
    expect(page.locator("#new-twin-form-error")).to_have_text(
        f"{path} already exists; choose another name."
    )
    expect(page).to_have_url(f"{server.url}/twins")

    form.get_by_label("a template").check()
    form.get_by_role("button", name="Create").click()
    expect(page.locator("#new-twin-form-error")).to_have_text(
        f"{path} already exists; choose another name."
    )


def test_the_new_dt_form_works_without_javascript(browser: Browser, server: Server) -> None:
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        sign_in(page, server, "alice")
        page.goto(f"{server.url}/twins")
        name = unique_name("plain-")
        form = page.locator("#new-twin-form")
        form.get_by_label("Name", exact=True).fill(name)
        form.get_by_label("a template").check()
        form.get_by_label("Template", exact=True).select_option("mqtt-publisher")
        form.get_by_role("button", name="Create").click()
        expect(page).to_have_url(_view_url(server, f"alice/digital_twins/{name}"))
        expect(page.get_by_role("heading", level=1)).to_have_text(name)
    finally:
        context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_both_pages_fit_the_width_without_script_errors(
    browser: Browser, server: Server, tmp_path: Path, viewport: ViewportSize
) -> None:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        # The configuration form's 422 answers are expected; chromium and htmx log them.
        page.on(
            "console",
            lambda message: (
                problems.append(message.text)
                if message.type == "error" and "422" not in message.text
                else None
            ),
        )
        sign_in(page, server, "alice")
        page.goto(f"{server.url}/twins")
        path = _create_twin(page, server, name=unique_name("look-"), template="mqtt-publisher")
        width = viewport["width"]
        shots = []
        page.goto(f"{server.url}/twins")
        expect(_card(page, path)).to_be_visible()
        shots.append(tmp_path / f"twins-{width}.png")
        page.screenshot(path=shots[-1], full_page=True)
        _assert_no_sideways_scroll(page, width)

        page.goto(_view_url(server, path))
        config = page.locator("#config-form")
        config.get_by_label("Configuration name").fill("every second")
        config.get_by_label("count").fill("0")
        config.get_by_label("sensor").fill("bad sensor name")
        config.get_by_role("button", name="Save configuration").click()
        expect(page.locator("#config-form [aria-invalid='true']")).to_have_count(2)
        page.get_by_role("button", name="Dry run").click()
        expect(page.locator("#plan .plan")).to_be_visible()
        shots.append(tmp_path / f"twin-{width}.png")
        page.screenshot(path=shots[-1], full_page=True)
        _assert_no_sideways_scroll(page, width)

        broken = _write_broken_twin(page, server)
        page.goto(_view_url(server, broken))
        expect(page.locator("#problems li")).to_have_count(4)
        shots.append(tmp_path / f"broken-{width}.png")
        page.screenshot(path=shots[-1], full_page=True)
        _assert_no_sideways_scroll(page, width)
        assert all(shot.stat().st_size > 0 for shot in shots)
        assert problems == []
    finally:
        context.close()
