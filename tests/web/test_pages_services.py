"""The Services page on the platform started as the README says: the embedded broker's card,
health arriving after the page, and an admin registering, checking and removing a service."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Locator, Page, expect

from tests.web.conftest import PHONE, Server, create_user, sign_in, unique_name

pytestmark = pytest.mark.browser

# A check takes at most its timeout (2 s by default); the page polls for the swap.
HEALTH_DEADLINE_MS = 15_000


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers, like a hung broker."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def _card(page: Page, name: str) -> Locator:
    return page.locator(f"#service-{name}")


def _badge(page: Page, name: str) -> Locator:
    return _card(page, name).locator(".badge.health")


def _register(page: Page, *, name: str, kind: str, url: str, user: str = "", pw: str = "") -> None:
    page.locator("#service-name").fill(name)
    page.locator("#service-kind").select_option(kind)
    page.locator("#service-url").fill(url)
    page.locator("#service-username").fill(user)
    page.locator("#service-password").fill(pw)
    page.locator("#service-form").get_by_role("button", name="Register").click()


def test_the_embedded_broker_is_listed_and_comes_up(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")
    page.get_by_role("navigation").get_by_role("link", name="Services").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Services")
    card = _card(page, "mqtt")
    expect(card).to_contain_text("embedded")
    expect(card).to_contain_text("mqtt://127.0.0.1:")
    expect(_badge(page, "mqtt")).to_have_attribute("data-status", "up", timeout=HEALTH_DEADLINE_MS)
    expect(card.locator(".latency")).to_contain_text(" ms")
    card.get_by_text("How to connect").click()
    expect(card.locator("pre")).to_contain_text('os.environ["DTAAS_MQTT_URL"]')
    expect(page.locator("#service-form")).to_have_count(0)  # alice is no admin


def test_admin_registers_a_service_sees_it_up_and_removes_it(
    page: Page, server: Server, tmp_path: Path
) -> None:
    name = unique_name("rabbit-")
    sign_in(page, server, "admin")
    page.goto(f"{server.url}/services")

    _register(
        page, name=name, kind="amqp", url="amqp://guest@127.0.0.1:5672/", user="guest", pw="guest"
    )
    expect(page.locator("#service-url-error")).to_contain_text(
        "Put the username and password in their own fields"
    )
    expect(page.locator("#service-url")).to_have_attribute("aria-invalid", "true")
    expect(_card(page, name)).to_have_count(0)

    page.locator("#service-url").fill("amqp://127.0.0.1:5672/")
    page.locator("#service-password").fill("guest")
    page.locator("#service-form").get_by_role("button", name="Register").click()

    expect(page.locator("#services-notice")).to_have_text(f"Service '{name}' registered.")
    expect(_badge(page, name)).to_have_attribute("data-status", "up", timeout=HEALTH_DEADLINE_MS)
    expect(_badge(page, "mqtt")).to_have_attribute("data-status", "up", timeout=HEALTH_DEADLINE_MS)
    expect(_card(page, name)).to_contain_text("password set")
    expect(page.locator("#service-name")).to_have_value("")
    page.screenshot(path=tmp_path / "services-desktop.png", full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    _card(page, name).get_by_role("button", name=f"Remove {name}").click()
    expect(page.locator("#services-notice")).to_have_text(f"Service '{name}' removed.")
    expect(_card(page, name)).to_have_count(0)
    assert (tmp_path / "services-desktop.png").stat().st_size > 0


def test_a_hung_service_shows_down_without_holding_up_the_others(
    page: Page, server: Server, admin_token: str, silent_port: int, tmp_path: Path
) -> None:
    name = unique_name("hung-")
    response = httpx.post(
        f"{server.url}/api/v1/services",
        headers={"Authorization": f"Bearer {admin_token}"},
        json={"name": name, "kind": "mqtt", "url": f"mqtt://127.0.0.1:{silent_port}"},
    )
    assert response.status_code == 201, response.text
    try:
        sign_in(page, server, "admin")
        page.goto(f"{server.url}/services")

        expect(_badge(page, "mqtt")).to_have_attribute(
            "data-status", "up", timeout=HEALTH_DEADLINE_MS
        )
        expect(_badge(page, name)).to_have_attribute(
            "data-status", "down", timeout=HEALTH_DEADLINE_MS
        )
        expect(_card(page, name).locator(".health-error")).to_have_text("no answer within 2 s")
        page.screenshot(path=tmp_path / "services-down.png", full_page=True)
    finally:
        httpx.delete(
            f"{server.url}/api/v1/services/{name}",
            headers={"Authorization": f"Bearer {admin_token}"},
        )


def test_check_now_runs_a_new_check(page: Page, server: Server, admin_token: str) -> None:
    username = create_user(server, admin_token, prefix="svc", role="viewer")
    sign_in(page, server, username, "Browser-test-passw0rd")
    page.goto(f"{server.url}/services")
    checked = _card(page, "mqtt").locator("time.checked-at")
    expect(checked).to_have_count(1, timeout=HEALTH_DEADLINE_MS)
    first = checked.get_attribute("datetime")

    _card(page, "mqtt").get_by_role("button", name="Check mqtt now").click()

    expect(checked).not_to_have_attribute("datetime", first or "", timeout=HEALTH_DEADLINE_MS)
    expect(_badge(page, "mqtt")).to_have_attribute("data-status", "up")


def test_removing_asks_first(page: Page, server: Server, admin_token: str) -> None:
    name = unique_name("keep-")
    httpx.post(
        f"{server.url}/api/v1/services",
        headers={"Authorization": f"Bearer {admin_token}"},
        json={"name": name, "kind": "http", "url": "http://127.0.0.1:1/"},
    ).raise_for_status()
    try:
        sign_in(page, server, "admin")
        page.goto(f"{server.url}/services")
        questions: list[str] = []

        def dismiss(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        _card(page, name).get_by_role("button", name=f"Remove {name}").click()

        expect(_card(page, name)).to_have_count(1)
        assert questions == [f"Remove {name} from the catalogue?"]
    finally:
        httpx.delete(
            f"{server.url}/api/v1/services/{name}",
            headers={"Authorization": f"Bearer {admin_token}"},
        )


def test_the_page_fits_a_phone(browser: Browser, server: Server, tmp_path: Path) -> None:
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        sign_in(page, server, "admin")
        page.goto(f"{server.url}/services")
        expect(_badge(page, "mqtt")).to_have_attribute(
            "data-status", "up", timeout=HEALTH_DEADLINE_MS
        )

        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        page.screenshot(path=tmp_path / "services-phone.png", full_page=True)
    finally:
        context.close()
