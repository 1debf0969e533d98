"""User administration and navigation by role."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.web.conftest import (
    DESKTOP,
    TEST_PASSWORD,
    Server,
    create_user,
    sign_in,
    unique_name,
)

pytestmark = pytest.mark.browser


def _add_user(page: Page, username: str) -> None:
    form = page.locator("#user-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Full name").fill("Test Person")
    form.get_by_label("Password").fill(TEST_PASSWORD)
    form.get_by_label("Role").select_option("viewer")
    form.get_by_role("button", name="Add user").click()


def test_admin_adds_user_and_duplicate_is_an_inline_error(page: Page, server: Server) -> None:
    sign_in(page, server, "admin")
    page.goto(f"{server.url}/admin/users")
    username = unique_name("new")

    _add_user(page, username)

    row = page.locator(f"#user-{username}")
    expect(row).to_contain_text("Test Person")
    expect(row).to_contain_text("viewer")
    expect(page.locator("#user-form-error")).to_be_empty()

    _add_user(page, username)
    expect(page.locator("#user-form-error")).to_have_text(
        f"A user named '{username}' already exists."
    )
    expect(page.locator(f"#user-{username}")).to_have_count(1)


def test_add_user_form_checks_the_username_pattern_in_the_browser(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "admin")
    page.goto(f"{server.url}/admin/users")
    username = page.locator("#user-form").get_by_label("Username")

    username.fill("Not Allowed")
    assert username.evaluate("input => input.validity.patternMismatch") is True
    username.fill("allowed-name_2")
    assert username.evaluate("input => input.validity.patternMismatch") is False


def test_disabling_a_user_ends_their_browser_session_at_once(
    page: Page, browser: Browser, server: Server, admin_token: str
) -> None:
    username = create_user(server, admin_token, prefix="off")
    theirs = browser.new_context(viewport=DESKTOP)
    try:
        their_page = theirs.new_page()
        sign_in(their_page, server, username, TEST_PASSWORD)
        expect(their_page.locator("#login-form")).to_have_count(0)

        sign_in(page, server, "admin")
        page.goto(f"{server.url}/admin/users")
        row = page.locator(f"#user-{username}")
        questions: list[str] = []

        def accept(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        row.get_by_role("button", name="Disable").click()
        expect(row).to_contain_text("disabled")
        assert questions == [f"Disable {username}? Their sessions and tokens stop working at once."]

        response = their_page.reload()
        assert response is not None
        assert response.status == 401
        expect(their_page.locator("#login-form")).to_be_visible()
    finally:
        theirs.close()


def test_navigation_lists_only_pages_the_role_may_use(
    page: Page, browser: Browser, server: Server
) -> None:
    sign_in(page, server, "alice")
    nav = page.get_by_role("navigation")
    expect(nav.get_by_role("link", name="Home")).to_be_visible()
    expect(nav.get_by_role("link", name="Account")).to_be_visible()
    expect(nav.get_by_role("link", name="Users")).to_have_count(0)

    admin = browser.new_context(viewport=DESKTOP)
    try:
        admin_page = admin.new_page()
        sign_in(admin_page, server, "admin")
        expect(
            admin_page.get_by_role("navigation").get_by_role("link", name="Users")
        ).to_be_visible()
    finally:
        admin.close()


def test_user_page_is_forbidden_to_alice_with_a_clear_message(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")

    response = page.goto(f"{server.url}/admin/users")

    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("does not allow 'manage_users'")
    expect(page.locator("#user-form")).to_have_count(0)
