"""The Library page: upload by drag-and-drop, preview, edit, rename, delete, and errors.

alice writes her own library and reads ``common``. The server is shared by the session,
so every test works on file and folder names nobody else uses.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import (
    APIResponse,
    Browser,
    Dialog,
    FilePayload,
    FloatRect,
    Locator,
    Page,
    ViewportSize,
    expect,
)

from tests.web.conftest import DESKTOP, PHONE, Server, sign_in, unique_name

pytestmark = pytest.mark.browser

FILE_API = "/api/v1/library/file"
KIND_TABS = {
    "functions": "Functions",
    "models": "Models",
    "tools": "Tools",
    "data": "Data",
    "digital_twins": "Digital Twins",
}


def _csrf(page: Page) -> str:
    token: str = page.evaluate(
        "JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']"
    )
    assert token
    return token


def _read(page: Page, server: Server, path: str) -> APIResponse:
    return page.request.get(f"{server.url}{FILE_API}?path={quote(path)}")


def _write(page: Page, server: Server, path: str, text: str, *, if_match: str = "*") -> None:
    """Create (or, with the current ETag, replace) a file through the API as the page's user."""
    response = page.request.put(
        f"{server.url}{FILE_API}?path={quote(path)}",
        data=text.encode(),
        headers={
            "X-CSRF-Token": _csrf(page),
            "Content-Type": "text/plain; charset=utf-8",
            "If-Match": if_match,
        },
    )
    assert response.ok, response.text()


def _open_new_folder(page: Page, server: Server, prefix: str) -> str:
    """Sign alice in, make her a fresh folder in Models and open the page on it."""
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/library")
    folder = f"alice/models/{unique_name(prefix)}"
    response = page.request.post(
        f"{server.url}/api/v1/library/folders",
        data={"path": folder},
        headers={"X-CSRF-Token": _csrf(page)},
    )
    assert response.status == 201, response.text()
    page.goto(f"{server.url}/library?kind=models&scope=private&path={quote(folder)}")
    expect(page.locator("#listing .listing")).to_have_attribute("data-path", folder)
    return folder


def _row(page: Page, name: str) -> Locator:
    return page.locator(f'#listing tr.entry[data-name="{name}"]')


def _drop_file(page: Page, name: str, text: str) -> None:
    """Drag a file from 'the desktop' onto the dropzone, as a browser reports it."""
    transfer = page.evaluate_handle(
        """([name, text]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, { type: "text/plain" }));
            return transfer;
        }""",
        [name, text],
    )
    dropzone = page.locator("#dropzone")
    for event in ("dragenter", "dragover"):
        dropzone.dispatch_event(event, {"dataTransfer": transfer})
    expect(dropzone).to_have_class(re.compile(r"\bdragging\b"))
    dropzone.dispatch_event("drop", {"dataTransfer": transfer})
    transfer.dispose()


def _accept_next_dialog(page: Page, answer: str | None = None) -> list[str]:
    """Accept the next prompt (typing ``answer``) or confirm; the list gets its question."""
    asked: list[str] = []

    def handle(dialog: Dialog) -> None:
        asked.append(dialog.message)
        if answer is None:
            dialog.accept()
        else:
            dialog.accept(answer)

    page.once("dialog", handle)
    return asked


def test_alice_uploads_by_drag_and_drop_edits_sees_the_change_and_deletes(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/library")
    expect(page.locator("#listing .listing")).to_have_attribute("data-path", "alice/models")
    name = f"{unique_name('dropped-')}.txt"
    path = f"alice/models/{name}"

    _drop_file(page, name, "first version\n")

    expect(page.locator("#upload-status")).to_have_text("Uploaded 1 file(s).")
    expect(page.locator("#upload-progress")).to_be_hidden()
    expect(page.locator("#dropzone")).not_to_have_class(re.compile(r"\bdragging\b"))
    row = _row(page, name)
    row.get_by_role("link", name=name).click()
    expect(page.locator("#preview-name")).to_have_text(name)
    expect(page.locator("#preview-body")).to_contain_text("first version")

    page.get_by_role("button", name="Edit").click()
    editor = page.locator("#editor")
    expect(editor).to_have_value("first version\n")
    editor.fill("second version, edited in the browser\n")
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#preview-saved")).to_have_text("Saved.")
    expect(page.locator("#editor-form")).to_be_hidden()
    expect(page.locator("#preview-body")).to_contain_text("second version, edited in the browser")
    stored = _read(page, server, path)
    assert stored.status == 200
    assert stored.text() == "second version, edited in the browser\n"

    asked = _accept_next_dialog(page)
    row.get_by_role("button", name=f"Delete {name}").click()

    expect(row).to_have_count(0)
    expect(page.locator("#preview")).to_have_text("Deleted. Select a file to preview it.")
    assert asked == [f"Delete {path}? This cannot be undone."]
    gone = _read(page, server, path)
    assert gone.status == 404
    assert gone.json()["detail"][0]["type"] == "not_found"


def test_saving_over_a_newer_version_is_refused_and_keeps_both_texts(
    page: Page, server: Server
) -> None:
    folder = _open_new_folder(page, server, "conflict-")
    path = f"{folder}/notes.md"
    _write(page, server, path, "# Notes\n\nversion one\n")
    page.reload()
    _row(page, "notes.md").get_by_role("link", name="notes.md").click()
    page.get_by_role("button", name="Edit").click()
    page.locator("#editor").fill("# Notes\n\nmy browser edit\n")

    etag = _read(page, server, path).headers["etag"]
    _write(page, server, path, "# Notes\n\nsaved through the API meanwhile\n", if_match=etag)
    page.get_by_role("button", name="Save").click()

    expect(page.locator("#editor-form-error")).to_contain_text(
        "Someone changed this file since you opened it."
    )
    expect(page.locator("#editor")).to_have_value("# Notes\n\nmy browser edit\n")
    assert _read(page, server, path).text() == "# Notes\n\nsaved through the API meanwhile\n"


def test_common_assets_preview_as_markdown_code_and_table_and_are_read_only(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/library")
    tabs = page.get_by_role("navigation", name="Asset kinds")
    for key, label in KIND_TABS.items():
        expect(tabs.locator(f"#tab-{key}")).to_have_text(label)
    expect(tabs.locator("#tab-models")).to_have_attribute("aria-current", "page")

    page.locator("#scope-common").click()
    expect(page.locator("#listing .listing")).to_have_attribute("data-path", "common/models")
    asset = _row(page, "heated-tank")
    expect(asset).to_contain_text("Lumped thermal model of a heated water tank")
    for absent in ("#dropzone", "#new-folder", "#new-file", "#listing button.delete"):
        expect(page.locator(absent)).to_have_count(0)

    asset.get_by_role("link", name="heated-tank").click()
    listing = page.locator("#listing .listing")
    expect(listing).to_have_attribute("data-path", "common/models/heated-tank")
    expect(page).to_have_url(re.compile(r"scope=common&path=common%2Fmodels%2Fheated-tank$"))
    page.go_back()
    expect(listing).to_have_attribute("data-path", "common/models")
    page.go_forward()
    expect(listing).to_have_attribute("data-path", "common/models/heated-tank")
    page.reload()
    expect(listing).to_have_attribute("data-path", "common/models/heated-tank")
    _row(page, "README.md").get_by_role("link", name="README.md").click()
    markdown = page.locator("#preview-body .markdown")
    expect(markdown.get_by_role("heading", name="Heated tank", level=1)).to_be_visible()
    expect(markdown.locator("table th").first).to_have_text("parameter", use_inner_text=True)
    expect(markdown.locator("table td").first).to_have_text("capacity_j_per_k")
    expect(page.get_by_role("button", name="Edit")).to_have_count(0)

    _row(page, "tank.json").get_by_role("link", name="tank.json").click()
    expect(page.locator("#preview-name")).to_have_text("tank.json")
    expect(page.locator("#preview-body .highlight")).to_be_visible()
    json_key = page.locator("#preview-body .highlight span.nt").first
    expect(json_key).to_have_text('"capacity_j_per_k"')
    assert json_key.evaluate("span => getComputedStyle(span).color") != json_key.evaluate(
        "span => getComputedStyle(span.closest('pre')).color"
    )
    for absent in ("#dropzone", "#new-folder", "#listing button.delete", "#edit-file"):
        expect(page.locator(absent)).to_have_count(0)

    page.locator("#tab-data").click()
    expect(page.locator("#listing .listing")).to_have_attribute("data-path", "common/data")
    _row(page, "tank-measurements").get_by_role("link", name="tank-measurements").click()
    _row(page, "measurements.csv").get_by_role("link", name="measurements.csv").click()
    table = page.locator("#preview-body table.csv")
    expect(table.locator("thead th").first).to_have_text("time_s", use_inner_text=True)
    expect(table.locator("tbody tr").first.locator("td").first).to_have_text("0")


def test_new_folder_new_file_rename_and_the_name_filter(page: Page, server: Server) -> None:
    folder = _open_new_folder(page, server, "buttons-")

    asked = _accept_next_dialog(page, "experiments")
    page.get_by_role("button", name="New folder").click()
    expect(_row(page, "experiments")).to_have_attribute("data-type", "folder")
    assert asked == ["Name of the new folder"]

    _accept_next_dialog(page, "notes.md")
    page.get_by_role("button", name="New file").click()
    expect(_row(page, "notes.md")).to_have_attribute("data-type", "file")
    expect(page.locator("#preview-name")).to_have_text("notes.md")
    assert _read(page, server, f"{folder}/notes.md").text() == ""

    asked = _accept_next_dialog(page, "summary.md")
    page.get_by_role("button", name="Rename notes.md").click()
    expect(_row(page, "summary.md")).to_have_count(1)
    expect(_row(page, "notes.md")).to_have_count(0)
    expect(page.locator("#preview-name")).to_have_text("summary.md")
    assert asked == ["Rename notes.md to"]
    assert _read(page, server, f"{folder}/summary.md").status == 200
    expect(page.locator("#library-error")).to_be_empty()

    name_filter = page.get_by_role("searchbox", name="Filter by name")
    name_filter.fill("SUMM")
    expect(_row(page, "summary.md")).to_be_visible()
    expect(_row(page, "experiments")).to_be_hidden()
    expect(page.locator("#no-match")).to_be_hidden()
    name_filter.fill("nothing-is-called-this")
    expect(_row(page, "summary.md")).to_be_hidden()
    expect(page.locator("#no-match")).to_be_visible()
    name_filter.fill("")
    expect(_row(page, "experiments")).to_be_visible()
    expect(_row(page, "summary.md")).to_be_visible()


def test_back_button_returns_to_the_folder_and_buttons_still_ask_once(
    page: Page, server: Server
) -> None:
    folder = _open_new_folder(page, server, "history-")
    listing = page.locator("#listing .listing")
    page.locator(".breadcrumbs").get_by_role("link", name="models").click()
    expect(listing).to_have_attribute("data-path", "alice/models")
    expect(page).to_have_url(re.compile(r"path=alice%2Fmodels$"))
    # File names stay out of the browser's storage, where they would outlive signing out.
    stored = page.evaluate("JSON.stringify([localStorage, sessionStorage])")
    assert folder.rsplit("/", 1)[1] not in stored

    page.go_back()
    expect(listing).to_have_attribute("data-path", folder)
    asked: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.get_by_role("button", name="New folder").click()
    page.evaluate("0")  # runs only once every prompt the click opened has been answered
    assert asked == ["Name of the new folder"]


def test_choose_files_picker_is_keyboard_reachable_and_uploads(page: Page, server: Server) -> None:
    folder = _open_new_folder(page, server, "picker-")
    picker = page.locator("#file-input")
    picker.focus()
    expect(picker).to_be_focused()

    files: list[FilePayload] = [
        {"name": "one.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,2\n"},
        {"name": "two.txt", "mimeType": "text/plain", "buffer": b"two\n"},
    ]
    picker.set_input_files(files)

    expect(page.locator("#upload-status")).to_have_text("Uploaded 2 file(s).")
    expect(_row(page, "one.csv")).to_be_visible()
    expect(_row(page, "two.txt")).to_be_visible()
    assert _read(page, server, f"{folder}/one.csv").text() == "a,b\n1,2\n"


def test_rename_onto_an_existing_name_and_uploading_twice_show_the_conflict(
    page: Page, server: Server
) -> None:
    folder = _open_new_folder(page, server, "clash-")
    _write(page, server, f"{folder}/a.txt", "a\n")
    _write(page, server, f"{folder}/b.txt", "b\n")
    page.reload()

    _accept_next_dialog(page, "b.txt")
    page.get_by_role("button", name="Rename a.txt").click()
    error = page.locator("#library-error")
    expect(error).to_have_text(f"{folder}/b.txt already exists.")
    expect(error).to_be_visible()
    assert _read(page, server, f"{folder}/a.txt").text() == "a\n"

    _accept_next_dialog(page, "a.txt")
    page.get_by_role("button", name="New file").click()
    expect(error).to_have_text(
        f"{folder}/a.txt already exists; choose another name or open it to edit it."
    )
    assert _read(page, server, f"{folder}/a.txt").text() == "a\n"

    _drop_file(page, "b.txt", "replacement\n")
    expect(error.locator("span")).to_have_text(f"{folder}/b.txt already exists.")
    expect(page.locator("#upload-status")).to_be_empty()
    expect(page.locator("#upload-progress")).to_be_hidden()
    assert _read(page, server, f"{folder}/b.txt").text() == "b\n"

    error.get_by_role("button", name="Replace it").click()
    expect(page.locator("#upload-status")).to_have_text("Uploaded 1 file(s).")
    expect(error).to_be_empty()
    assert _read(page, server, f"{folder}/b.txt").text() == "replacement\n"


def test_a_file_too_large_to_preview_offers_the_download(page: Page, server: Server) -> None:
    folder = _open_new_folder(page, server, "large-")
    _write(page, server, f"{folder}/big.log", "a line of a long log\n" * 60_000)
    page.reload()

    _row(page, "big.log").get_by_role("link", name="big.log").click()

    expect(page.locator("#preview-body")).to_have_text(
        "This file is larger than 1.0 MB, too large to preview here. Download it instead."
    )
    expect(page.get_by_role("button", name="Edit")).to_have_count(0)
    with page.expect_download() as started:
        page.locator("#preview").get_by_role("button", name="Download").click()
    assert started.value.suggested_filename == "big.log"


def _assert_fits(page: Page, width: int) -> None:
    """The page does not scroll sideways; the message says whether the app bar or the
    library content is the one too wide."""
    widths = page.evaluate(
        """() => ({
            page: document.documentElement.scrollWidth,
            appBar: document.querySelector(".app-header").scrollWidth,
            library: document.querySelector("main").scrollWidth,
        })"""
    )
    assert widths["page"] <= width, f"scrolls sideways at {width} px: {widths}"


def _look_at_library(
    browser: Browser, server: Server, shots: Path, viewport: ViewportSize
) -> tuple[FloatRect, FloatRect]:
    """Open a folder with a long name and a Markdown preview, then the editor and common.

    Screenshots land in ``shots`` for a person to look at; every view must fit the width
    without script errors. Returns the boxes of the file list and of the preview.
    """
    width = viewport["width"]
    context = browser.new_context(viewport=viewport)
    try:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )
        folder = _open_new_folder(page, server, "look-")
        long_name = "calibration-of-the-heated-tank-against-measurements-" + "x" * 40 + ".md"
        _write(page, server, f"{folder}/{long_name}", "# Calibration\n\n" + "word " * 200)
        _write(page, server, f"{folder}/tank.json", '{"capacity_j_per_k": 42000}\n')
        page.reload()
        _row(page, long_name).get_by_role("link", name=long_name).click()
        expect(page.locator("#preview-body .markdown h1")).to_have_text("Calibration")
        expect(page.locator("#preview-name")).to_be_in_viewport()
        page.screenshot(path=shots / f"library-{width}.png", full_page=True)
        _assert_fits(page, width)
        tree = page.locator(".library-tree").bounding_box()
        preview = page.locator(".library-preview").bounding_box()

        page.get_by_role("button", name="Edit").click()
        expect(page.locator("#editor")).to_be_visible()
        page.screenshot(path=shots / f"library-editor-{width}.png", full_page=True)
        _assert_fits(page, width)

        page.locator("#scope-common").click()
        _row(page, "heated-tank").get_by_role("link", name="heated-tank").click()
        _row(page, "README.md").get_by_role("link", name="README.md").click()
        expect(page.locator("#preview-body .markdown table")).to_be_visible()
        page.screenshot(path=shots / f"library-common-{width}.png", full_page=True)
        _assert_fits(page, width)

        page.locator("#tab-data").click()
        _row(page, "tank-measurements").get_by_role("link", name="tank-measurements").click()
        _row(page, "measurements.csv").get_by_role("link", name="measurements.csv").click()
        expect(page.locator("#preview-body table.csv")).to_be_visible()
        page.screenshot(path=shots / f"library-csv-{width}.png", full_page=True)
        _assert_fits(page, width)
        assert problems == []
    finally:
        context.close()
    assert tree is not None
    assert preview is not None
    return tree, preview


def test_library_on_a_phone_fits_the_width_and_stacks_the_preview(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    tree, preview = _look_at_library(browser, server, tmp_path, PHONE)
    assert preview["y"] >= tree["y"] + tree["height"]
    assert tree["width"] == pytest.approx(preview["width"])


def test_library_on_a_desktop_shows_the_preview_beside_the_list(
    browser: Browser, server: Server, tmp_path: Path
) -> None:
    tree, preview = _look_at_library(browser, server, tmp_path, DESKTOP)
    assert preview["x"] >= tree["x"] + tree["width"]
    assert preview["y"] == pytest.approx(tree["y"])
