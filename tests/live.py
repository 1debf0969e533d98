"""A real dtaas server on a loopback socket, for tests of the CLI, the client and curl.

The server runs the real app (no dependency overrides) in a background thread against its
own SQLite file, so whatever a test does through the network is committed and seen by the
next request, exactly as in production. Its supervisor runs jobs for real; when the block
ends, jobs still active are cancelled and no job process may outlive the test.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dtaas import db
from dtaas.api.app import create_app, prepare
from dtaas.client import Client, Credentials
from dtaas.config import Settings
from dtaas.lifecycle import service as lifecycle
from dtaas.lifecycle.models import Job, JobState
from dtaas.security import service as security
from dtaas.security.models import Role, User
from tests.execution.processes import assert_no_processes_of, wait_until
from tests.factories import PASSWORD, make_principal

ADMIN = "root"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
# Long enough for a job to end after SIGTERM plus its grace, and for the supervisor to see it.
JOBS_STOP_TIMEOUT = 30.0
ACTIVE = lifecycle.ACTIVE
# Proxies from the environment would send loopback requests elsewhere.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class LiveServer:
    """A running server and a way to add users to its database directly."""

    url: str
    settings: Settings
    sessions: sessionmaker[Session]

    def add_user(self, username: str, *, role: Role = Role.USER, password: str = PASSWORD) -> None:
        """Create a user through the security service, acting as the site's admin."""
        with self.sessions() as session:
            admin = security.find_user(session=session, username=ADMIN)
            assert admin is not None
            security.create_user(
                session=session,
                settings=self.settings,
                actor=make_principal(admin),
                username=username,
                password=password,
                role=role,
            )

    @property
    def files_dir(self) -> Path:
        """Where the libraries are stored: ``<files_dir>/<username>/...`` and ``common/...``."""
        return self.settings.resolved_files_dir

    def add_twin(
        self,
        path: str,
        *,
        scripts: dict[str, str],
        manifest: str | None = None,
        files: dict[str, str] | None = None,
    ) -> str:
        """Write a DT folder straight into a library: executable ``lifecycle/`` scripts,
        an optional ``dt.yaml`` and other files; returns ``path``."""
        folder = self.files_dir / path
        write_twin_folder(folder, scripts=scripts, manifest=manifest, files=files)
        return path

    def client_for(self, username: str) -> Client:
        """A client acting as ``username`` with a fresh token; close it (``with``) when done."""
        return Client(self.url, token=self.token_for(username))

    def token_for(self, username: str) -> str:
        """A fresh API token of ``username``, made through the security service."""
        return self._new_token(username).token

    def store_credentials(self, username: str) -> Credentials:
        """Save a fresh token of ``username`` where the CLI looks, as `dtaas login` would."""
        created = self._new_token(username)
        stored = Credentials(
            server=self.url, username=username, token=created.token, token_id=created.record.id
        )
        stored.save()
        return stored

    def _new_token(self, username: str) -> security.NewToken:
        with self.sessions() as session:
            user = security.find_user(session=session, username=username)
            assert user is not None
            return security.create_token(
                session=session, settings=self.settings, actor=make_principal(user), name="test"
            )


def write_twin_folder(
    folder: Path,
    *,
    scripts: dict[str, str],
    manifest: str | None = None,
    files: dict[str, str] | None = None,
) -> Path:
    """Write a DT folder anywhere: ``lifecycle/<phase>`` scripts (mode 0755), ``dt.yaml``
    when given, and other files by their path inside the folder."""
    (folder / "lifecycle").mkdir(parents=True, exist_ok=True)
    for phase, body in scripts.items():
        script = folder / "lifecycle" / phase
        script.write_text(body)
        script.chmod(0o755)
    if manifest is not None:
        (folder / "dt.yaml").write_text(manifest)
    for name, content in (files or {}).items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return folder


def live_settings(data_dir: Path) -> Settings:
    """Settings for a throw-away site in ``data_dir``: SQLite, loopback, no demo users."""
    return Settings(
        data_dir=data_dir,
        host="127.0.0.1",
        secret_key="test-secret-key-not-for-production",
        demo=False,
        log_level="WARNING",
        supervisor=True,  # queued jobs run, as in production (tests/conftest.py turns it off)
        job_stop_grace_seconds=1.0,  # a job that ignores SIGTERM is killed after a second
        embedded_mqtt=False,  # tests that need a broker start one or use the machine's
    )


def isolate_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Keep the machine's dtaas settings, credentials and proxies out of a test.

    Returns the credentials file the CLI and ``Credentials`` will use (not yet created).
    """
    for name in list(os.environ):
        if name.startswith("DTAAS_") or name.upper() in PROXY_VARIABLES:
            monkeypatch.delenv(name)
    path = home / "config" / "credentials"
    monkeypatch.setenv("DTAAS_CREDENTIALS", str(path))
    return path


@contextmanager
def kept_logging() -> Iterator[None]:
    """Undo what ``configure_logging`` does to the root logger once the block ends."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@contextmanager
def closed_port_url() -> Iterator[str]:
    """A loopback URL where nothing listens: the port is bound but never listened on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def run_live_server(data_dir: Path, **changes: object) -> Iterator[LiveServer]:
    """Migrate a new site in ``data_dir``, create its admin and serve it until the block ends.

    ``changes``: settings other than ``live_settings``'s, e.g. a Ray cluster's.
    """
    settings = live_settings(data_dir).model_copy(update=changes)
    prepare(settings)
    engine = db.make_engine(settings)
    sessions = db.make_sessionmaker(engine)
    with sessions() as session:
        security.bootstrap_admin(
            session=session, settings=settings, username=ADMIN, password=PASSWORD
        )
    # Binding first, then handing the socket to uvicorn, leaves no window for another
    # process to take the port.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with kept_logging():
            config = uvicorn.Config(
                create_app(settings),
                host="127.0.0.1",
                port=port,
                log_config=None,
                access_log=False,
                ws="none",
                lifespan="on",
            )
            server = uvicorn.Server(config)
            thread = threading.Thread(
                target=server.run, kwargs={"sockets": [sock]}, name="live-dtaas", daemon=True
            )
            thread.start()
            try:
                _wait_until_started(server, thread)
                yield LiveServer(
                    url=f"http://127.0.0.1:{port}", settings=settings, sessions=sessions
                )
            finally:
                try:
                    _stop_jobs(sessions)
                finally:
                    server.should_exit = True
                    thread.join(STOP_TIMEOUT)
                assert not thread.is_alive(), "the live server did not stop"
    finally:
        sock.close()
        engine.dispose()
        assert_no_processes_of(settings.data_dir.resolve())


def _active_jobs(sessions: sessionmaker[Session]) -> list[Job]:
    with sessions() as session:
        return list(session.scalars(select(Job).where(Job.state.in_(ACTIVE))))


def _stop_jobs(sessions: sessionmaker[Session]) -> None:
    """Cancel the jobs still active and wait until the supervisor has recorded their end.

    A stopping platform leaves its jobs running (the next start re-attaches them); a test
    must leave nothing behind.
    """
    with sessions() as session:
        for job in session.scalars(select(Job).where(Job.state.in_(ACTIVE))).all():
            if job.state == JobState.CANCELLING:
                continue
            owner = session.get(User, job.owner_id)
            assert owner is not None
            lifecycle.cancel_job(session=session, actor=make_principal(owner), job_id=job.id)
    wait_until(
        lambda: not _active_jobs(sessions),
        timeout=JOBS_STOP_TIMEOUT,
        message="every job of the live server ending",
    )


def _wait_until_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        # join() doubles as the wait and notices a server thread that died on startup.
        thread.join(0.01)
        if not thread.is_alive():
            raise RuntimeError("the live server stopped during startup; see the log above")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError(f"the live server did not start within {START_TIMEOUT} s")
