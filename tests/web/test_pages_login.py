"""Signing in and out through the browser: the login form, errors, ``next`` and cookies."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.conftest import PHONE, Server, fill_login_form, sign_in

pytestmark = pytest.mark.browser


def test_alice_signs_in_to_home_with_httponly_session_cookie(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")

    expect(page).to_have_url(f"{server.url}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Alice Example")
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["dtaas_session"]["httpOnly"] is True
    assert cookies["dtaas_session"]["sameSite"] == "Lax"


def test_wrong_password_is_shown_and_form_still_signs_in(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/login")
    fill_login_form(page, "alice", "not-her-password")

    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.locator("#login-form")).to_be_visible()

    fill_login_form(page, "alice", server.passwords["alice"])
    expect(page).to_have_url(f"{server.url}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Alice Example")


def test_signed_out_account_asks_to_sign_in_then_returns_there(page: Page, server: Server) -> None:
    response = page.goto(f"{server.url}/account")

    assert response is not None
    assert response.status == 401
    expect(page.locator("#login-form")).to_be_visible()
    # A failed attempt must not lose where the user was heading.
    fill_login_form(page, "alice", "not-her-password")
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    fill_login_form(page, "alice", server.passwords["alice"])
    expect(page).to_have_url(f"{server.url}/account")
    expect(page.get_by_role("heading", level=1)).to_have_text("Account")


def test_sign_out_returns_to_login_and_ends_the_session(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")

    page.locator("#sign-out").click()

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(page.locator("#login-form")).to_be_visible()
    response = page.goto(f"{server.url}/")
    assert response is not None
    assert response.status == 401
    expect(page.locator("#login-form")).to_be_visible()


def _has_no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_phone_width_login_and_home_fit_and_nav_works(browser: Browser, server: Server) -> None:
    context = browser.new_context(viewport=PHONE)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/login")
        expect(page.locator("#login-form")).to_be_visible()
        assert _has_no_horizontal_scroll(page)

        sign_in(page, server, "alice")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Alice Example")
        assert _has_no_horizontal_scroll(page)

        nav = page.get_by_role("navigation")
        nav.get_by_role("link", name="Account").click()
        expect(page).to_have_url(f"{server.url}/account")
        assert _has_no_horizontal_scroll(page)
        expect(page.locator("#sign-out")).to_be_visible()
    finally:
        context.close()
