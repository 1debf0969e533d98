"""Fixtures of the CLI tests: a live server, isolated credentials and settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dtaas.config import get_settings
from tests.live import LiveServer, isolate_environment, run_live_server


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Each test's commands read the settings of its own environment."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the CLI keeps its token in this test (not created yet)."""
    return isolate_environment(monkeypatch, tmp_path)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def live(tmp_path: Path, credentials_file: Path) -> Iterator[LiveServer]:
    """The real app on a loopback port, with the admin ``root`` and the user ``alice``."""
    with run_live_server(tmp_path / "site") as server:
        server.add_user("alice")
        yield server
