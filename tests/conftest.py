"""Fixtures shared by every test: settings, a database per backend, sessions, an app client,
and one Ray head for the session's tests of the Ray executor.

Database tests run twice: on SQLite and on the machine's PostgreSQL (127.0.0.1:5432,
database ``test``), each run in its own throw-away schema. Each test runs inside an outer
transaction that is rolled back, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from dtaas import db
from dtaas.api.app import create_app
from dtaas.config import Settings
from dtaas.security import service as security
from dtaas.security.models import Role
from tests import xdist_groups
from tests.execution.ray_head import RayHead, start_ray_head
from tests.factories import make_principal, make_user
from tests.rabbitmq import RabbitNode, start_rabbitmq_node

POSTGRES_ADMIN_URL = os.environ.get(
    "DTAAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A fresh, migrated database per backend for the whole run."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "dtaas.db"
        yield f"sqlite:///{path}"
        return
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    base = Settings(data_dir=tmp_path_factory.mktemp("engine"), database_url=database_url)
    engine = db.make_engine(base)
    db.upgrade(engine)
    yield engine
    engine.dispose()


class _Ray:
    """The worker's Ray head while Ray tests run (see ``ray_head``)."""

    head: RayHead | None = None


def _uses_ray(item: pytest.Item | None) -> bool:
    marker = item.get_closest_marker("xdist_group") if item is not None else None
    return marker is not None and marker.args[:1] == ("ray",)


@pytest.fixture
def ray_head() -> RayHead:
    """A Ray head on loopback with token auth, started on first use and shared by the Ray
    tests that follow; stopped once the next test is not one (an idle head costs about half
    a CPU, and ~0.7 GB). Ray tests carry ``xdist_group("ray")``, so that with
    ``--dist loadgroup`` they run one after another on one worker (tests/xdist_groups.py
    makes that work under pytest 9.2).
    """
    if _Ray.head is None:
        _Ray.head = start_ray_head()
    return _Ray.head


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _Ray.head is not None and not _uses_ray(nextitem):
        head, _Ray.head = _Ray.head, None
        head.stop()


@pytest.fixture(scope="session")
def rabbitmq_node() -> Iterator[RabbitNode]:
    """A private RabbitMQ node with the management API (tests/rabbitmq.py), started on first
    use and stopped at the end of the run; idle, it costs little. Tests that use it carry
    ``xdist_group("rabbitmq")``, so that with ``--dist loadgroup`` one worker runs them all
    on one node.
    """
    node = start_rabbitmq_node()
    yield node
    node.stop()


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords with argon2's cheapest parameters: each user a test makes would
    otherwise cost a real hash (~0.1 CPU-s). tests/security keeps the real parameters."""
    monkeypatch.setattr(
        security, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own data directory, loopback only."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        host="127.0.0.1",
        secret_key="test-secret-key-not-for-production",
        demo=False,
        log_level="WARNING",
        supervisor=False,  # lifecycle tests drive Supervisor.tick() themselves
        embedded_mqtt=False,  # tests that want the embedded broker ask for it (tests/services)
    )


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose commits only release savepoints; everything is rolled back after."""
    connection = engine.connect()
    outer = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()


@pytest.fixture
def client(settings: Settings, session: Session) -> Iterator[TestClient]:
    """The app for ``settings``, with every request using the test's session."""
    app = create_app(settings)

    def test_session() -> Iterator[Session]:
        try:
            yield session
        except Exception:
            session.rollback()
            raise

    app.dependency_overrides[db.get_session] = test_session
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture
def admin(session: Session, settings: Settings):
    return make_user(session, settings, username="root-admin", role=Role.ADMIN)


@pytest.fixture
def alice(session: Session, settings: Settings):
    return make_user(session, settings, username="alice", role=Role.USER)


@pytest.fixture
def viewer(session: Session, settings: Settings):
    return make_user(session, settings, username="victor", role=Role.VIEWER)


@pytest.fixture
def admin_principal(admin):
    return make_principal(admin)


def pytest_configure(config: pytest.Config) -> None:
    """Tests marked ``xdist_group`` share a worker again (see tests/xdist_groups.py)."""
    config.pluginmanager.register(xdist_groups, "dtaas-xdist-groups")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of known, not yet fixed bugs (see tests/known_bugs.py)."""
    from tests.known_bugs import KNOWN_BUGS

    for item in items:
        reason = KNOWN_BUGS.get(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
