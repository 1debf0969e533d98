"""Fixtures of the accounting tests: cheap password hashing, tokens, quotas, DT instances."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.accounting import service as accounting
from dtaas.config import Settings
from dtaas.lifecycle import service as lifecycle
from dtaas.lifecycle.models import Instance
from dtaas.security import service as security
from dtaas.security.models import User
from tests.factories import bearer, make_principal, make_user
from tests.lifecycle.conftest import bound_sessions, write_twin

Headers = dict[str, str]
KIB = 1024
MIB = 1024 * 1024
EXECUTE = "#!/bin/sh\necho running\n"


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords with argon2's cheapest parameters; tokens authenticate every request."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture(autouse=True)
def measured_afresh() -> Iterator[None]:
    """Folder sizes cached by an earlier test in this process never leak into the next."""
    accounting.folder_sizes.clear()
    yield
    accounting.folder_sizes.clear()


@pytest.fixture
def bob(session: Session, settings: Settings) -> User:
    return make_user(session, settings, username="bob")


@pytest.fixture
def as_alice(session: Session, settings: Settings, alice: User) -> Headers:
    return bearer(session, settings, alice)


@pytest.fixture
def as_admin(session: Session, settings: Settings, admin: User) -> Headers:
    return bearer(session, settings, admin)


@pytest.fixture
def set_quota(
    session: Session, settings: Settings, admin: User
) -> Callable[[str, int | None], None]:
    """``set_quota(username, mib)``: an administrator's quota for one user."""

    def set_(username: str, quota_mb: int | None) -> None:
        accounting.set_quota(
            session=session,
            settings=settings,
            actor=make_principal(admin),
            username=username,
            quota_mb=quota_mb,
        )

    return set_


@pytest.fixture
def library(settings: Settings, alice: User) -> Path:
    """alice's library on disk."""
    return settings.resolved_files_dir / "alice"


def fill(path: Path, size: int) -> Path:
    """Write ``size`` bytes into a new file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


@pytest.fixture
def instance(session: Session, settings: Settings, alice: User) -> Instance:
    """An instance of a one-script DT of alice's (ready, never run)."""
    twin = write_twin(settings, "alice/digital_twins/tiny", {"execute": EXECUTE})
    return lifecycle.create_instance(
        session=session, settings=settings, actor=make_principal(alice), twin_path=twin
    )


@pytest.fixture
def api(client: TestClient, session: Session) -> TestClient:
    """The app, with requests and background work on the test's connection."""
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    return client
