"""The supervisor and API requests writing the same SQLite database at the same time.

In production the supervisor thread ticks while requests are served. These tests use a
SQLite file of their own (not the shared rolled-back connection), because the point is
what two real connections do to each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from dtaas import db
from dtaas.api.app import prepare
from dtaas.config import Settings
from dtaas.execution.base import Executor, JobOutcome, JobSpec
from dtaas.lifecycle import service
from dtaas.lifecycle.models import Job, JobState
from dtaas.lifecycle.supervisor import Supervisor, executors_for
from tests.execution.processes import assert_no_processes_of, wait_until
from tests.factories import make_principal, make_user
from tests.lifecycle.conftest import write_twin


class WithConcurrentRequest(Executor):
    """While the supervisor's tick polls, another thread runs ``request`` (once).

    The poll waits until the request has finished or a second has passed (then the
    request is waiting for a lock the tick holds, as a correctly serialised one would).
    """

    name = "local"

    def __init__(self, inner: Executor, request: Callable[[], None]) -> None:
        self.inner = inner
        self.request: Callable[[], None] | None = request
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def _run(self, request: Callable[[], None]) -> None:
        try:
            request()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)

    def start(self, spec: JobSpec) -> dict[str, Any]:
        return self.inner.start(spec)

    def poll(self, handle: dict[str, Any]) -> JobOutcome | None:
        if self.request is not None:
            request, self.request = self.request, None
            self.thread = threading.Thread(target=self._run, args=(request,))
            self.thread.start()
            self.thread.join(timeout=1.0)
        return self.inner.poll(handle)

    def stop(self, handle: dict[str, Any], *, grace: float) -> None:
        self.inner.stop(handle, grace=grace)

    def find(self, job_id: int) -> dict[str, Any] | None:
        return self.inner.find(job_id)


@pytest.fixture
def sqlite_site(tmp_path: Path) -> Iterator[tuple[Settings, Engine]]:
    """A migrated SQLite site of its own, as `dtaas serve` makes it."""
    settings = Settings(
        data_dir=tmp_path / "data",
        secret_key="test-secret-key-not-for-production",
        demo=False,
        supervisor=False,
        log_level="WARNING",
        job_stop_grace_seconds=1,
    )
    prepare(settings)
    engine = db.make_engine(settings)
    yield settings, engine
    engine.dispose()
    assert_no_processes_of(tmp_path)


def test_a_request_committing_during_a_tick_breaks_neither(sqlite_site):
    settings, engine = sqlite_site
    sessions: sessionmaker[Session] = db.make_sessionmaker(engine)
    with sessions() as session:
        alice = make_principal(make_user(session, settings, username="alice"))
        twin = write_twin(
            settings, "alice/digital_twins/quick", {"execute": "#!/bin/bash\necho hi\n"}
        )
        first, second = (
            service.create_instance(session=session, settings=settings, actor=alice, twin_path=twin)
            for _ in range(2)
        )
        job_id = service.run_phase(
            session=session, settings=settings, actor=alice, instance_id=first.id, phase="execute"
        ).id
        second_id = second.id

    def concurrent_request() -> None:
        """What POST /instances/{second}/phases does, in a session of its own."""
        with sessions() as session:
            service.run_phase(
                session=session,
                settings=settings,
                actor=alice,
                instance_id=second_id,
                phase="execute",
            )

    real = executors_for(settings)["local"]
    plain = Supervisor(settings=settings, sessions=sessions, executors={"local": real})
    plain.tick()  # starts the first job
    with sessions() as session:
        handle = session.scalars(select(Job.handle).where(Job.id == job_id)).one()
    assert handle is not None
    wait_until(lambda: real.poll(handle), message="the first job's end")
    interleaved = WithConcurrentRequest(real, concurrent_request)
    supervisor = Supervisor(settings=settings, sessions=sessions, executors={"local": interleaved})

    try:
        supervisor.tick()  # reads the jobs; the request commits meanwhile; it records the end
    finally:
        assert interleaved.thread is not None
        interleaved.thread.join(timeout=60)

        def all_ended() -> bool:
            plain.tick()
            with sessions() as session:
                return all(job.state.is_terminal() for job in session.scalars(select(Job)))

        wait_until(all_ended, message="every job ending")  # nothing is left running

    assert interleaved.errors == []
    with sessions() as session:
        states = {job.instance_id: job.state for job in session.scalars(select(Job))}
    assert states == {first.id: JobState.SUCCEEDED, second_id: JobState.SUCCEEDED}
