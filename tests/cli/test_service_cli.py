"""`dtaas service ls|check` against a live server and the machine's Mosquitto."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner, Result

from dtaas.cli import app
from tests.live import LiveServer, kept_logging
from tests.services.support import MOSQUITTO_URL


def run(runner: CliRunner, *args: str) -> Result:
    with kept_logging():
        result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def signed_in(live: LiveServer) -> LiveServer:
    with live.client_for("root") as root:
        root.register_service(name="site-mosquitto", kind="mqtt", url=MOSQUITTO_URL)
    live.store_credentials("alice")
    return live


def test_service_ls_lists_each_service_with_its_health(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "service", "ls")

    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if " name " in line)
    row = next(line for line in result.output.splitlines() if " site-mosquitto " in line)
    assert _cells(header) == ["name", "kind", "source", "health", "url"]
    assert _cells(row)[:3] == ["site-mosquitto", "mqtt", "registered"]
    assert _cells(row)[3].startswith("up (")
    assert _cells(row)[4] == MOSQUITTO_URL


def _cells(line: str) -> list[str]:
    """The cells of one line of a rich table."""
    return [cell.strip() for cell in line.replace("┃", "│").split("│") if cell.strip()]


def test_service_check_prints_up_with_the_latency(runner: CliRunner, signed_in: LiveServer) -> None:
    result = run(runner, "service", "check", "site-mosquitto")

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"site-mosquitto (mqtt, {MOSQUITTO_URL}) is up (")
    assert result.output.rstrip().endswith(" ms)")


def test_service_check_of_a_down_service_exits_1_saying_why(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"mqtt://127.0.0.1:{bound.getsockname()[1]}"
        with signed_in.client_for("root") as root:
            root.register_service(name="gone", kind="mqtt", url=url)
        result = run(runner, "service", "check", "gone")

    assert result.exit_code == 1
    assert result.output == (
        f"gone (mqtt, {url}) is down: connection refused: nothing listens at that address\n"
    )


def test_service_check_of_an_unknown_service_is_an_error(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "service", "check", "nothing-here")

    assert result.exit_code == 1
    assert "error: There is no service named 'nothing-here'" in result.output
