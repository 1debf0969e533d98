"""Fixtures of the client tests: a live server and a machine environment kept out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live import LiveServer, isolate_environment, run_live_server


@pytest.fixture
def credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``Credentials`` reads and writes in this test (not created yet)."""
    return isolate_environment(monkeypatch, tmp_path)


@pytest.fixture
def live(tmp_path: Path, credentials_file: Path) -> Iterator[LiveServer]:
    """The real app on a loopback port, with the admin ``root`` and the user ``alice``."""
    with run_live_server(tmp_path / "site") as server:
        server.add_user("alice")
        yield server
