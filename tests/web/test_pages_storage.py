"""Storage on the pages: the account page's bar, and quotas set on the admins' page."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import TEST_PASSWORD, Server, api_token, create_user, sign_in

pytestmark = pytest.mark.browser

KIB = 1024
MIB = 1024 * 1024


def _storage(server: Server, admin_token: str, username: str) -> dict[str, object]:
    response = httpx.get(
        f"{server.url}/api/v1/accounting/storage/{username}",
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_account_page_shows_storage_used_against_the_quota_with_a_bar(
    page: Page, server: Server, admin_token: str
) -> None:
    username = create_user(server, admin_token, prefix="store")
    token = api_token(server, username, TEST_PASSWORD)
    uploaded = httpx.post(
        f"{server.url}/api/v1/library/upload",
        params={"path": f"{username}/data"},
        files={"files": ("levels.bin", b"l" * 512 * KIB, "application/octet-stream")},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert uploaded.status_code == 201, uploaded.text
    quota = httpx.put(
        f"{server.url}/api/v1/accounting/quotas/{username}",
        json={"quota_mb": 2},
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert quota.status_code == 200, quota.text

    sign_in(page, server, username, TEST_PASSWORD)
    page.goto(f"{server.url}/account")

    expect(page.locator("#storage-summary")).to_have_text(
        "512.0 KiB of 2.0 MiB used · 1.5 MiB free"
    )
    bar = page.locator("#storage-bar")
    expect(bar).to_be_visible()
    expect(bar).to_have_attribute("value", str(512 * KIB))
    expect(bar).to_have_attribute("max", str(2 * MIB))
    expect(page.locator("#storage-library")).to_have_text("512.0 KiB")
    expect(page.locator("#storage-snapshots")).to_have_text("0 bytes")
    expect(page.locator("#storage-quota")).to_have_text("2 MiB · set for you")


def test_account_page_without_a_quota_shows_no_bar(
    page: Page, server: Server, admin_token: str
) -> None:
    username = create_user(server, admin_token, prefix="free")
    sign_in(page, server, username, TEST_PASSWORD)
    page.goto(f"{server.url}/account")

    expect(page.locator("#storage-summary")).to_have_text("0 bytes used · no quota")
    expect(page.locator("#storage-bar")).to_have_count(0)
    expect(page.locator("#storage-quota")).to_have_text("unlimited · site default")


def test_admin_sets_a_quota_on_the_storage_page_and_resets_it(
    page: Page, server: Server, admin_token: str
) -> None:
    username = create_user(server, admin_token, prefix="quota")
    sign_in(page, server, "admin")
    page.goto(f"{server.url}/admin/users")
    page.get_by_role("button", name="Storage and quotas").click()
    expect(page).to_have_url(re.compile(r"/admin/storage$"))
    row = page.locator(f"#storage-{username}")
    field = row.get_by_label(f"Quota of {username} in MiB")

    field.fill("3")
    row.get_by_role("button", name="Set").click()

    expect(row.locator("td[data-label='Used']")).to_contain_text("0 bytes of 3.0 MiB")
    expect(row.get_by_label(f"Quota of {username} in MiB")).to_have_value("3")
    assert (_storage(server, admin_token, username)["quota_mb"]) == 3

    row.get_by_label(f"Quota of {username} in MiB").fill("")
    row.get_by_role("button", name="Set").click()

    expect(row.locator("td[data-label='Used']")).to_have_text("0 bytes")
    expect(row.get_by_label(f"Quota of {username} in MiB")).to_have_value("")
    stored = _storage(server, admin_token, username)
    assert (stored["quota_mb"], stored["quota_source"]) == (None, "site")


def test_an_impossible_quota_is_an_inline_error(
    page: Page, server: Server, admin_token: str
) -> None:
    username = create_user(server, admin_token, prefix="huge")
    sign_in(page, server, "admin")
    page.goto(f"{server.url}/admin/storage")
    row = page.locator(f"#storage-{username}")

    row.get_by_label(f"Quota of {username} in MiB").fill("99999999999")
    row.get_by_role("button", name="Set").click()

    expect(page.locator("#quota-row-error")).to_have_text(
        "'99999999999' is not a quota: give whole MiB from 0 to 1073741824, or 'none' for "
        "the site default."
    )
    assert _storage(server, admin_token, username)["quota_mb"] is None


def test_storage_page_is_forbidden_to_users(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")

    response = page.goto(f"{server.url}/admin/storage")

    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("does not allow 'manage_users'")
    expect(page.locator("#storage-table")).to_have_count(0)
