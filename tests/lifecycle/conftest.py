"""Fixtures of the lifecycle tests: DTs on disk, a supervisor driven by the test, tokens.

The test's ``session`` runs inside an outer transaction that is rolled back; the
supervisor works on the same connection (each tick in a savepoint of its own), so the
API and the supervisor see each other's commits and everything is still rolled back.

The site's executor is the ``executor`` fixture: ``local`` unless a module parametrises it
over ``EXECUTORS`` (``pytestmark = on_every_executor``), which runs its tests on the local
executor and on the session's Ray head (on SQLite only). Tests of what only the local
executor does are marked ``local_only(reason)`` and skipped for Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from dtaas.config import Settings
from dtaas.lifecycle.supervisor import Supervisor
from dtaas.security.models import User
from tests.execution.processes import assert_no_processes_of, wait_until
from tests.factories import bearer, make_user

T = TypeVar("T")

API = "/api/v1"
STOP_GRACE_SECONDS = 1.0
# With pytest-xdist's --dist loadgroup, the Ray runs share one worker, so one Ray head.
EXECUTORS = ["local", pytest.param("ray", marks=pytest.mark.xdist_group("ray"))]
on_every_executor = pytest.mark.parametrize("executor", EXECUTORS, indirect=True)


@pytest.fixture
def executor(request: pytest.FixtureRequest) -> str:
    """Where the site runs its jobs: ``local``, or ``ray`` where a module asks for both."""
    name: str = getattr(request, "param", "local")
    if name != "ray":
        return name
    local_only = request.node.get_closest_marker("local_only")
    if local_only is not None:
        pytest.skip(f"local executor only: {local_only.args[0]}")
    return name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run Ray on SQLite only: a Ray job takes ~2 s, and the database is not what the
    executor changes (the local runs cover PostgreSQL)."""
    ray_on_postgresql = [
        item
        for item in items
        if (callspec := getattr(item, "callspec", None)) is not None
        and callspec.params.get("executor") == "ray"
        and callspec.params.get("database_url") == "postgresql"
    ]
    if ray_on_postgresql:
        config.hook.pytest_deselected(items=ray_on_postgresql)
        items[:] = [item for item in items if item not in ray_on_postgresql]


@pytest.fixture
def settings(settings: Settings, executor: str, request: pytest.FixtureRequest) -> Settings:
    """The test's site, running its jobs on ``executor``.

    On Ray the data directory is the shared directory, as a site whose Ray nodes mount it:
    jobs run in their working copies in place, so what they write lands there.
    """
    if executor == "local":
        return settings
    head = request.getfixturevalue("ray_head")
    return settings.model_copy(
        update={
            "executor": "ray",
            "ray_address": head.address,
            "ray_auth_token": SecretStr(head.token),
            "ray_shared_dir": settings.data_dir.resolve(),
        }
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

    made: list[Supervisor] = []

    def make(**changes: object) -> Driver:
        supervisor = Supervisor(
            settings=supervisor_settings(settings, **changes),
            sessions=bound_sessions(session),
            pack_in_background=False,
        )
        made.append(supervisor)
        return Driver(supervisor=supervisor, session=session)

    yield make
    for supervisor in made:
        for executor in supervisor.executors.values():
            close = getattr(executor, "close", None)  # the Ray executor's log streams
            if close is not None:
                close()
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
