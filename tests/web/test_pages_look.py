"""Every page at desktop and phone width: no sideways scroll, no script errors, and
screenshots (in the test's ``tmp_path``) for a person to look at."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, ViewportSize, expect

from tests.web.conftest import DESKTOP, PHONE, Server, sign_in

pytestmark = pytest.mark.browser

PAGES = {"home": "/", "account": "/account", "users": "/admin/users", "cluster": "/admin/cluster"}


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_page_fits_the_width_without_script_errors(
    browser: Browser, server: Server, tmp_path: Path, viewport: ViewportSize
) -> None:
    context = browser.new_context(viewport=viewport)
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )
        page.goto(f"{server.url}/login")
        expect(page.locator("#login-form")).to_be_visible()
        shots = [tmp_path / f"login-{viewport['width']}.png"]
        page.screenshot(path=shots[0], full_page=True)
        sign_in(page, server, "admin")
        for name, path in PAGES.items():
            page.goto(f"{server.url}{path}")
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            scroll_width = page.evaluate("document.documentElement.scrollWidth")
            assert scroll_width <= viewport["width"], f"{name} scrolls sideways"
            shots.append(tmp_path / f"{name}-{viewport['width']}.png")
            page.screenshot(path=shots[-1], full_page=True)
        assert all(shot.stat().st_size > 0 for shot in shots)
        assert problems == []
    finally:
        context.close()
