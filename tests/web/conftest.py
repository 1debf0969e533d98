"""Browser fixtures: the platform started as the README says, and Debian's chromium.

One server runs for the whole session, started exactly like a user's first start
(``scripts/start`` on an empty data directory), so the demo users and their one-time
passwords are real. Tests share it, so every user or token a test creates has a unique name.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 375, "height": 740}
START_DEADLINE_SECONDS = 60
STOP_GRACE_SECONDS = 10
TEST_PASSWORD = "Browser-test-passw0rd"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RULE = re.compile(r"^─+$")
_PASSWORD_LINE = re.compile(r"^  ([a-z][a-z0-9_-]*)\s+(\S+)$")


@dataclass
class Server:
    """A running ``scripts/start`` on loopback and the demo passwords it printed."""

    url: str
    passwords: dict[str, str]
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    data_dir: Path | None = None  # its secret key derives the embedded broker's accounts

    def log(self) -> str:
        return "".join(self.output)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def parse_demo_passwords(output: str) -> dict[str, str]:
    """The ``  name  password`` lines between the two rules that ``dtaas serve`` prints."""
    passwords: dict[str, str] = {}
    inside = False
    for raw in output.splitlines():
        line = _ANSI.sub("", raw).rstrip()
        if "Demo users created" in line:
            inside = True
        elif inside and _RULE.match(line.strip()):
            break
        elif inside and (match := _PASSWORD_LINE.match(line)):
            passwords[match.group(1)] = match.group(2)
    return passwords


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM the whole process group (setup, dtaas), then SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_GRACE_SECONDS)
    except ProcessLookupError:
        process.wait(timeout=STOP_GRACE_SECONDS)


def _wait_until_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:  # doubles as the pause between polls
            code = server.process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"scripts/start exited with {code} before serving:\n{server.log()}")
    _stop(server.process)
    pytest.fail(
        f"{server.url}/healthz did not answer 200 within {START_DEADLINE_SECONDS} s:\n"
        f"{server.log()}"
    )


@contextmanager
def start_platform(data_dir: Path, **settings: str) -> Iterator[Server]:
    """``scripts/start --port <free port>`` on an empty data directory, as a first start.

    ``settings`` are ``DTAAS_*`` variables beyond the data directory (e.g. ``MQTT_URL``);
    none of the caller's own ``DTAAS_*`` variables leak in.
    """
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DTAAS_")}
    env["DTAAS_DATA_DIR"] = str(data_dir)
    env.update({f"DTAAS_{name}": value for name, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        ["scripts/start", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        start_new_session=True,
    )
    running = Server(
        url=f"http://127.0.0.1:{port}", passwords={}, process=process, data_dir=data_dir
    )

    def drain() -> None:  # keeps reading so a full pipe never blocks the server
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)

    reader = threading.Thread(target=drain, name="dtaas-server-output", daemon=True)
    reader.start()
    try:
        _wait_until_healthy(running)
        # The passwords are printed before uvicorn starts, so they are in by now.
        running.passwords = parse_demo_passwords(running.log())
        missing = {"admin", "alice", "bob"} - running.passwords.keys()
        assert not missing, f"no demo password for {missing} in:\n{running.log()}"
        yield running
    finally:
        _stop(process)
        reader.join(timeout=STOP_GRACE_SECONDS)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The platform as the README's first command starts it (embedded defaults)."""
    with start_platform(tmp_path_factory.mktemp("dtaas-data")) as running:
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless; never a Playwright-downloaded browser."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context (no cookies) at desktop size."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()


def sign_in(page: Page, server: Server, username: str, password: str | None = None) -> None:
    """Sign in through the login form and wait until the browser has left it."""
    page.goto(f"{server.url}/login")
    fill_login_form(page, username, password or server.passwords[username])
    expect(page).not_to_have_url(re.compile(r"/login"))


def fill_login_form(page: Page, username: str, password: str) -> None:
    """Type into the login form on the current page and submit it."""
    form = page.locator("#login-form")
    form.get_by_label("Username").fill(username)
    form.get_by_label("Password").fill(password)
    form.get_by_role("button", name="Sign in").click()


def unique_name(prefix: str) -> str:
    """A username nobody else on the shared server has."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def api_token(server: Server, username: str, password: str | None = None) -> str:
    """A fresh API token for ``username``, traded for the password."""
    response = httpx.post(
        f"{server.url}/api/v1/auth/token",
        json={
            "username": username,
            "password": password or server.passwords[username],
            "token_name": unique_name("test-"),
        },
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="session")
def admin_token(server: Server) -> str:
    return api_token(server, "admin")


def create_user(server: Server, admin_token: str, *, prefix: str, role: str = "user") -> str:
    """A new user created by the admin through the API; password ``TEST_PASSWORD``."""
    username = unique_name(prefix)
    response = httpx.post(
        f"{server.url}/api/v1/users",
        headers={"Authorization": f"Bearer {admin_token}"},
        json={"username": username, "password": TEST_PASSWORD, "role": role},
    )
    assert response.status_code == 201, response.text
    return username
