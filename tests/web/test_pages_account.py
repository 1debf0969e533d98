"""The account page: API tokens shown once and revoked, and changing the password."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import (
    DESKTOP,
    TEST_PASSWORD,
    Server,
    create_user,
    sign_in,
    unique_name,
)

pytestmark = pytest.mark.browser


def _me(server: Server, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})


def test_token_is_shown_once_works_and_stops_when_revoked(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/account")
    name = unique_name("laptop-")

    form = page.locator("#token-form")
    form.get_by_label("Name").fill(name)
    form.get_by_role("button", name="Create token").click()

    shown = page.locator("#new-token-value")
    expect(shown).to_have_text(re.compile(r"^dtaas_[\w-]{20,}$"))
    token = shown.inner_text().strip()
    assert token.startswith("dtaas_")
    me = _me(server, token)
    assert me.status_code == 200
    assert me.json()["user"]["username"] == "alice"

    row = page.locator("#tokens tr", has_text=name)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()

    expect(row).to_contain_text("revoked")
    refused = _me(server, token)
    assert refused.status_code == 401
    assert refused.json()["detail"][0]["type"] == "not_authenticated"
    page.reload()
    expect(page.locator("#new-token-value")).to_have_count(0)
    assert token not in page.content()


def test_change_password_reports_wrong_current_then_changes_it(
    page: Page, browser: Browser, server: Server, admin_token: str
) -> None:
    username = create_user(server, admin_token, prefix="pw")
    new_password = "Another-long-passw0rd"
    sign_in(page, server, username, TEST_PASSWORD)
    page.goto(f"{server.url}/account")
    form = page.locator("#password-form")

    form.get_by_label("Current password").fill("not-the-password")
    form.get_by_label("New password").fill(new_password)
    form.get_by_role("button", name="Change password").click()
    expect(page.locator("#password-form-error")).to_have_text("The current password is wrong.")

    form.get_by_label("Current password").fill(TEST_PASSWORD)
    form.get_by_label("New password").fill(new_password)
    form.get_by_role("button", name="Change password").click()
    expect(page.locator("#password-form-result")).to_have_text("Your password was changed.")
    expect(page.locator("#password-form-error")).to_be_empty()

    other = browser.new_context(viewport=DESKTOP)
    try:
        again = other.new_page()
        sign_in(again, server, username, new_password)
        expect(again).to_have_url(f"{server.url}/")
    finally:
        other.close()
