"""Fixtures of the lifecycle tests: DTs on disk, a supervisor driven by the test, tokens.

The test's ``session`` runs inside an outer transaction that is rolled back; the
supervisor works on the same connection (each tick in a savepoint of its own), so the
API and the supervisor see each other's commits and everything is still rolled back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from argon2 import PasswordHasher
from sqlalchemy.orm import Session, sessionmaker

from dtaas.config import Settings
from dtaas.lifecycle.supervisor import Supervisor
from dtaas.security import service as security
from dtaas.security.models import User
from tests.execution.processes import assert_no_processes_of, wait_until
from tests.factories import bearer, make_user

T = TypeVar("T")

API = "/api/v1"
STOP_GRACE_SECONDS = 1.0


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords with argon2's cheapest parameters; tokens authenticate every request."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


def write_twin(
    settings: Settings,
    path: str,
    scripts: dict[str, str],
    files: dict[str, str] | None = None,
) -> str:
    """Write a DT folder into a library (``<area>/digital_twins/<name>``); returns its path."""
    folder = settings.resolved_files_dir / path
    (folder / "lifecycle").mkdir(parents=True)
    for phase, body in scripts.items():
        script = folder / "lifecycle" / phase
        script.write_text(body)
        script.chmod(0o755)
    for name, content in (files or {}).items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return path


@dataclass
class Driver:
    """Runs the supervisor's ticks on the test's connection until a condition holds."""

    supervisor: Supervisor
    session: Session

    def tick(self) -> None:
        # End the test session's savepoint first: a request that rolls back later must
        # not take the supervisor's released savepoint with it.
        self.session.commit()
        self.supervisor.tick()
        self.session.expire_all()

    def run_until(
        self, condition: Callable[[], T], *, timeout: float = 30.0, message: str = "condition"
    ) -> T:
        def ticked() -> T:
            self.tick()
            return condition()

        return wait_until(ticked, timeout=timeout, message=message)


def supervisor_settings(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"job_stop_grace_seconds": STOP_GRACE_SECONDS, **changes})


def bound_sessions(session: Session) -> sessionmaker[Session]:
    """Sessions on the test's connection, each in a savepoint of its own."""
    return sessionmaker(
        bind=session.connection(),
        join_transaction_mode="create_savepoint",
        expire_on_commit=False,
    )


@pytest.fixture
def make_driver(settings: Settings, session: Session) -> Iterator[Callable[..., Driver]]:
    """``make_driver(**setting_changes)``: a supervisor for this test's site."""

    def make(**changes: object) -> Driver:
        supervisor = Supervisor(
            settings=supervisor_settings(settings, **changes),
            sessions=bound_sessions(session),
            pack_in_background=False,
        )
        return Driver(supervisor=supervisor, session=session)

    yield make
    assert_no_processes_of(settings.data_dir.resolve())


@pytest.fixture
def driver(make_driver: Callable[..., Driver]) -> Driver:
    return make_driver()


@pytest.fixture
def bob(session: Session, settings: Settings) -> User:
    return make_user(session, settings, username="bob")


@pytest.fixture
def as_alice(session: Session, settings: Settings, alice: User) -> dict[str, str]:
    return bearer(session, settings, alice)


@pytest.fixture
def as_bob(session: Session, settings: Settings, bob: User) -> dict[str, str]:
    return bearer(session, settings, bob)


@pytest.fixture
def as_viewer(session: Session, settings: Settings, viewer: User) -> dict[str, str]:
    return bearer(session, settings, viewer)


@pytest.fixture
def common_dir(settings: Settings, alice: User) -> Path:
    """common/ on disk (made with alice's library)."""
    return settings.resolved_files_dir / "common"
