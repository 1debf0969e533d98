"""The Instances pages: deploying a DT, running its phases by button, the live log, history.

alice deploys the demo's ``common/digital_twins/hello-world`` (lifecycle scripts only). The
server is shared by the session, so every instance and DT a test makes has a unique name.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Dialog, Page, ViewportSize, expect

from tests.web.conftest import DESKTOP, PHONE, Server, sign_in, unique_name

pytestmark = pytest.mark.browser

HELLO_WORLD = "common/digital_twins/hello-world"
JOB_TIMEOUT_MS = 30_000  # a phase is queued, started by the supervisor and reaped
BUTTONS = {
    "create": "#phase-create",
    "execute": "#phase-execute",
    "cancel": "#cancel-button",
    "terminate": "#terminate-button",
    "clean": "#clean-button",
    "delete": "#delete-button",
}
# What each state of an instance lets its owner press on the page.
ENABLED_IN = {
    "ready": {"create", "execute", "terminate", "clean"},
    "busy": {"terminate", "cancel"},
    "terminating": set(),
    "terminated": {"clean", "delete"},
    "cleaned": {"delete"},
    "cleaning": {"cancel"},
}
# A DT whose execute runs until it is stopped, and writes to both streams.
SLOW_MANIFEST = """manifest: 1
name: {name}
phases:
  execute:
    command: "echo started; echo 'a warning on stderr' >&2; exec sleep 120"
"""


def _csrf(page: Page) -> str:
    token: str = page.evaluate(
        "JSON.parse(document.body.getAttribute('hx-headers'))['X-CSRF-Token']"
    )
    assert token
    return token


def _accept_dialogs(page: Page) -> list[str]:
    """Accept every confirmation the page asks; returns the questions as they come."""
    questions: list[str] = []

    def accept(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return questions


def _deploy(page: Page, server: Server, twin_path: str, name: str) -> int:
    """Deploy through the Instances page's form; returns the new instance's id."""
    page.goto(f"{server.url}/instances")
    form = page.locator("#deploy-form")
    form.get_by_label("Digital twin").select_option(twin_path)
    # The configurations of the chosen DT arrive by htmx and enable the select.
    expect(form.get_by_label("Configuration")).to_be_enabled()
    form.get_by_label("Name").fill(name)
    form.get_by_role("button", name="Deploy").click()
    expect(page).to_have_url(re.compile(r"/instances/\d+$"))
    expect(page.locator("h1 .instance-name")).to_have_text(name)
    return int(page.url.rsplit("/", 1)[1])


def _state_and_buttons(page: Page) -> tuple[str, set[str]]:
    """The shown state and the enabled buttons, read in one go so no swap falls between."""
    state, enabled = page.evaluate(
        """(buttons) => {
            const state = document.getElementById("instance-state").textContent.trim();
            const enabled = Object.entries(buttons)
                .filter(([, selector]) => {
                    const button = document.querySelector(selector);
                    return button !== null && !button.disabled;
                })
                .map(([name]) => name);
            return [state, enabled];
        }""",
        BUTTONS,
    )
    return state, set(enabled)


def _expect_buttons_match_state(page: Page) -> str:
    """Whatever the state shown, exactly the buttons it allows are enabled."""
    # A pressed button stays disabled while its request is on the way; wait for the answer.
    expect(page.locator("#instance-live button.htmx-request")).to_have_count(0)
    state, enabled = _state_and_buttons(page)
    assert enabled == ENABLED_IN[state], f"in state {state}: {sorted(enabled)} enabled"
    return state


def _wait_for_state(page: Page, state: str) -> None:
    expect(page.locator("#instance-state")).to_have_text(state, timeout=JOB_TIMEOUT_MS)
    assert _expect_buttons_match_state(page) == state


def _run(page: Page, button: str, *, then: str) -> None:
    """Press a button, check the buttons against whatever state shows, wait for ``then``."""
    page.locator(BUTTONS[button]).click()
    _expect_buttons_match_state(page)
    _wait_for_state(page, then)


def _job_rows(page: Page) -> list[tuple[str, str]]:
    """(phase, state) of each job in the history, oldest first."""
    rows = page.locator("#instance-jobs tr.job-row")
    pairs = [
        (row.get_attribute("data-phase") or "", row.get_attribute("data-state") or "")
        for row in rows.all()
    ]
    return list(reversed(pairs))


def _no_horizontal_scroll(page: Page) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{page.url} scrolls sideways by {overflow}px"


def test_alice_deploys_hello_world_and_runs_its_lifecycle_by_button(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    questions = _accept_dialogs(page)
    name = unique_name("hello-")
    instance_id = _deploy(page, server, HELLO_WORLD, name)
    _wait_for_state(page, "ready")
    expect(page.locator("#job-log")).to_have_attribute(
        "data-empty", "Run a phase to see its output here."
    )

    _run(page, "create", then="ready")
    log = page.locator("#job-log")
    expect(log).to_contain_text("create: preparing the hello-world twin")

    _run(page, "execute", then="ready")
    expect(page.locator("#log-job")).to_contain_text("execute #")
    expect(log).to_contain_text("execute: hello from the digital twin")
    expect(log).to_contain_text("step 3 of 3")
    expect(log.locator(".log-end")).to_have_text(re.compile(r"execute #\d+ succeeded"))
    expect(page.locator("#log-state")).to_have_text("succeeded")
    assert log.inner_text().index("step 1 of 3") < log.inner_text().index("step 3 of 3")

    _run(page, "terminate", then="terminated")
    expect(log).to_contain_text("terminate: nothing keeps running")
    _run(page, "clean", then="cleaned")
    expect(log).to_contain_text("clean: output removed")
    assert questions == [
        f"Terminate {name}? A running phase is stopped, then the DT's terminate script runs; "
        "afterwards you can only clean or delete it.",
        f"Clean {name}? The DT's clean script runs and the working copy is removed; "
        "the job history stays.",
    ]

    expect(page.locator("#instance-jobs tr.job-row")).to_have_count(4)
    expect(page.locator("#instance-jobs tr.job-row[data-state='succeeded']")).to_have_count(4)
    assert _job_rows(page) == [
        ("create", "succeeded"),
        ("execute", "succeeded"),
        ("terminate", "succeeded"),
        ("clean", "succeeded"),
    ]
    execute_row = page.locator("#instance-jobs tr.job-row[data-phase='execute']")
    expect(execute_row.locator("td[data-label='Exit']")).to_have_text("0")
    expect(execute_row.locator("td[data-label='Executor']")).to_have_text("local")
    expect(execute_row.locator("td[data-label='Reason']")).to_have_text("exited with status 0")
    expect(execute_row.locator("td[data-label='Wall']")).to_have_text(re.compile(r"^\d+\.\d+ s$"))

    # Choosing a job in the history shows its log instead of the latest one.
    execute_row.get_by_role("button").click()
    expect(execute_row).to_have_class(re.compile(r"\bselected\b"))
    expect(log).to_contain_text("step 3 of 3")
    expect(log).not_to_contain_text("clean: output removed")
    page.locator("#follow-latest").click()
    expect(log).to_contain_text("clean: output removed")

    # The list shows the instance as cleaned, with its last job.
    page.goto(f"{server.url}/instances")
    row = page.locator(f"tr.instance-row[data-instance-id='{instance_id}']")
    expect(row.locator("td[data-label='State']")).to_have_text("cleaned")
    expect(row.locator("td[data-label='Last job']")).to_have_text(re.compile(r"clean\s+succeeded"))
    expect(row.locator("td[data-label='DT']")).to_have_text(re.compile(r"^hello-world\s+common$"))
    expect(row.get_by_role("link", name="hello-world")).to_have_attribute("title", HELLO_WORLD)


def test_execute_after_terminate_is_disabled_and_a_stale_click_shows_why(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    _accept_dialogs(page)
    instance_id = _deploy(page, server, HELLO_WORLD, unique_name("stale-"))
    _run(page, "terminate", then="terminated")
    execute = page.locator("#phase-execute")
    expect(execute).to_be_disabled()

    # A page left open elsewhere still had Execute enabled: the server refuses, and the
    # page says why in its error slot instead of failing silently.
    page.evaluate(
        """() => {
            const button = document.getElementById("phase-execute");
            button.disabled = false;
            button.click();
        }"""
    )
    error = page.locator("#instance-error")
    expect(error).to_have_text(
        f"Instance {instance_id} is terminated, so it cannot run execute; in this state you "
        "can clean or delete."
    )
    expect(page.locator("#instance-state")).to_have_text("terminated")
    expect(execute).to_be_disabled()  # redrawn from the real state after the refusal
    expect(error).to_contain_text("in this state you can clean or delete")
    assert _job_rows(page) == [("terminate", "succeeded")]

    # The next action clears the old message; Delete returns to the list without it.
    page.locator("#delete-button").click()
    expect(page).to_have_url(f"{server.url}/instances")
    expect(page.locator(f"tr.instance-row[data-instance-id='{instance_id}']")).to_have_count(0)
    response = page.request.get(f"{server.url}/instances/{instance_id}")
    assert response.status == 404


def test_a_running_job_allows_only_terminate_and_cancel_and_shows_stderr_apart(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    _accept_dialogs(page)
    name = unique_name("slow-")
    headers = {"X-CSRF-Token": _csrf(page)}
    created = page.request.post(
        f"{server.url}/api/v1/twins",
        data={"name": name, "source": HELLO_WORLD},
        headers=headers,
    )
    assert created.status == 201, created.text()
    twin_path = f"alice/digital_twins/{name}"
    manifest = page.request.put(
        f"{server.url}/api/v1/library/file?path={quote(twin_path + '/dt.yaml')}",
        data=SLOW_MANIFEST.format(name=name),
        headers={**headers, "Content-Type": "text/plain; charset=utf-8", "If-Match": "*"},
    )
    assert manifest.ok, manifest.text()

    _deploy(page, server, twin_path, name)
    page.locator("#phase-execute").click()
    _wait_for_state(page, "busy")
    expect(page.locator("#cancel-button")).to_have_text("Cancel execute")
    log = page.locator("#job-log")
    expect(log.locator(".stdout")).to_contain_text("started")
    stderr = log.locator(".stderr")
    expect(stderr).to_have_text("a warning on stderr\n")
    assert stderr.evaluate("(e) => getComputedStyle(e).color") != log.locator(
        ".stdout"
    ).first.evaluate("(e) => getComputedStyle(e).color")
    expect(page.locator("#log-state")).to_have_text("running")

    page.locator("#cancel-button").click()
    _wait_for_state(page, "ready")
    expect(page.locator("#log-state")).to_have_text("cancelled")
    expect(log.locator(".log-end")).to_have_text(re.compile(r"execute #\d+ cancelled"))
    expect(page.locator("#instance-jobs tr.job-row[data-state='cancelled']")).to_have_count(1)

    # Terminate while a phase runs: the phase is stopped first, then the instance ends.
    page.locator("#phase-execute").click()
    _wait_for_state(page, "busy")
    expect(log.locator(".stdout")).to_contain_text("started")
    page.locator("#terminate-button").click()
    _wait_for_state(page, "terminated")
    assert _job_rows(page) == [
        ("execute", "cancelled"),
        ("execute", "cancelled"),
        ("terminate", "succeeded"),
    ]


def test_deploy_offers_the_saved_configurations_of_the_chosen_dt(
    page: Page, server: Server
) -> None:
    sign_in(page, server, "alice")
    saved = unique_name("conf-")
    response = page.request.post(
        f"{server.url}/api/v1/twins/configurations?path={quote(HELLO_WORLD)}",
        data={"name": saved, "values": {}},
        headers={"X-CSRF-Token": _csrf(page)},
    )
    assert response.status == 201, response.text()

    page.goto(f"{server.url}/instances")
    configuration = page.locator("#deploy-configuration")
    expect(configuration).to_be_disabled()
    page.locator("#deploy-twin").select_option(HELLO_WORLD)
    expect(configuration.locator("option", has_text=saved)).to_have_count(1)
    configuration.select_option(label=saved)
    page.get_by_role("button", name="Deploy", exact=True).click()
    expect(page).to_have_url(re.compile(r"/instances/\d+$"))
    expect(page.locator(".instance-meta")).to_contain_text(f"configuration {saved}")
    # Without a name the instance is called after its DT.
    expect(page.locator("h1 .instance-name")).to_have_text("hello-world")


def test_deploy_without_a_dt_says_what_is_missing(page: Page, server: Server) -> None:
    sign_in(page, server, "alice")
    page.goto(f"{server.url}/instances")
    response = page.request.post(
        f"{server.url}/instances",
        form={"twin_path": "common/digital_twins/no-such-dt"},
        headers={"X-CSRF-Token": _csrf(page), "HX-Request": "true", "HX-Trigger": "deploy-form"},
    )
    assert response.status == 404
    assert response.headers["hx-retarget"] == "#deploy-form-error"


def test_bob_cannot_open_alices_instance(page: Page, browser: Browser, server: Server) -> None:
    sign_in(page, server, "alice")
    instance_id = _deploy(page, server, HELLO_WORLD, unique_name("private-"))
    context = browser.new_context(viewport=DESKTOP)
    try:
        other = context.new_page()
        sign_in(other, server, "bob")
        response = other.goto(f"{server.url}/instances/{instance_id}")
        assert response is not None
        assert response.status == 404
        expect(other.locator("main")).to_contain_text(f"There is no instance {instance_id}.")
        other.goto(f"{server.url}/instances")
        expect(other.locator(f"tr.instance-row[data-instance-id='{instance_id}']")).to_have_count(0)
    finally:
        context.close()


@pytest.mark.parametrize(("label", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_both_pages_fit_the_screen(
    browser: Browser, server: Server, tmp_path: Path, label: str, viewport: ViewportSize
) -> None:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        sign_in(page, server, "alice")
        _deploy(page, server, HELLO_WORLD, unique_name(f"look-{label}-"))
        _run(page, "create", then="ready")
        _run(page, "execute", then="ready")
        expect(page.locator("#job-log")).to_contain_text("step 3 of 3")
        _no_horizontal_scroll(page)
        page.screenshot(path=str(tmp_path / f"instance-{label}.png"), full_page=True)

        page.goto(f"{server.url}/instances")
        expect(page.locator("tr.instance-row").first).to_be_visible()
        _no_horizontal_scroll(page)
        page.screenshot(path=str(tmp_path / f"instances-{label}.png"), full_page=True)
    finally:
        context.close()
