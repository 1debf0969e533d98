"""Fixtures of the library tests: cheap password hashing, one app per module, users, tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas import db
from dtaas.api.app import create_app
from dtaas.config import Settings
from dtaas.security.models import User
from tests.factories import bearer, make_user
from tests.library.support import SharedApp


@pytest.fixture(scope="module")
def shared_app(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedApp]:
    """One app per module and database; see :class:`SharedApp` for how a module opts in."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("library"),
        database_url=database_url,
        host="127.0.0.1",
        secret_key="test-secret-key-not-for-production",
        demo=False,
        log_level="WARNING",
        # No job runs here; a supervisor would wait on the tests' SQLite write lock.
        supervisor=False,
        embedded_mqtt=False,
    )
    shared = SharedApp(settings=settings)
    app = create_app(settings)
    app.dependency_overrides[db.get_session] = shared.current_session
    with TestClient(app, base_url="http://127.0.0.1") as client:
        shared.client = client
        yield shared


@pytest.fixture
def bob(session: Session, settings: Settings) -> User:
    return make_user(session, settings, username="bob")


@pytest.fixture
def files_root(settings: Settings) -> Path:
    """The real root of every library area."""
    return settings.resolved_files_dir


@pytest.fixture
def as_alice(session: Session, settings: Settings, alice: User) -> dict[str, str]:
    return bearer(session, settings, alice)
