"""The supervisor: starts queued jobs within the limits, follows them, records their end.

One supervisor runs per site (a lock file in the data directory makes sure of it, so
several API worker processes never both start or reap a job). Each tick works in its own
database session and commits every change before acting on it, so a crash at any point
is picked up by the next tick, also after a restart: jobs whose processes still run are
re-attached by their persisted handle, the others are recorded as failed with a reason.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import psycopg
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dtaas.config import Settings
from dtaas.db import utcnow
from dtaas.errors import DtaasError
from dtaas.execution.base import EndReason, Executor, JobOutcome, JobSpec, Limits
from dtaas.execution.local import LocalExecutor
from dtaas.library.access import COMMON, KINDS
from dtaas.lifecycle import service, snapshots
from dtaas.lifecycle.models import Instance, InstanceState, Job, JobState, Snapshot, SnapshotState
from dtaas.security.models import User
from dtaas.security.permissions import ROLE_PERMISSIONS, Permission
from dtaas.services import accounts
from dtaas.services import service as services
from dtaas.twins import service as twins
from dtaas.twins.manifest import parse_duration, parse_memory

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25
WARN_EVERY_SECONDS = 60.0
WORKSPACE = "/workspace"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_REASONS = {
    EndReason.WALL_TIME: "stopped: the wall-time limit of {wall} was reached",
    EndReason.MEMORY: "stopped: the memory limit of {memory} was exceeded",
    EndReason.PROCESSES: "stopped: more than {processes} processes were started",
    EndReason.CPU_TIME: "stopped: the CPU-time limit was reached",
    EndReason.FILE_SIZE: "stopped: a file grew over the file-size limit",
    EndReason.CANCELLED: "cancelled",
    EndReason.LOST: "the job's process ended without a status (the platform or machine "
    "restarted while it ran)",
}


def executors_for(settings: Settings) -> dict[str, Executor]:
    """The executors this site can use, by name: Ray too when it has a cluster."""
    work = settings.data_dir.resolve() / "executor"
    executors: dict[str, Executor] = {
        "local": LocalExecutor(
            work_dir=work / "local",
            sandbox=settings.sandbox,
            grace_seconds=settings.job_stop_grace_seconds,
        )
    }
    if settings.ray_address is not None:
        executors["ray"] = _ray_executor(settings)
    return executors


def _ray_executor(settings: Settings) -> Executor:
    try:
        # Imported here: Ray is an extra (dtaas[ray]), and slow to import.
        from dtaas.execution.ray import RayExecutor, site_id_for
    except ImportError as exc:
        raise RuntimeError(
            "DTAAS_RAY_ADDRESS is set but Ray's client is not installed: pip install 'dtaas[ray]'"
        ) from exc
    token = settings.ray_auth_token
    return RayExecutor(
        address=settings.ray_address or "",
        site_id=site_id_for(settings.data_dir.resolve()),
        auth_token=token.get_secret_value() if token is not None else None,
        shared_dir=settings.ray_shared_dir,
        max_upload_bytes=settings.ray_max_upload_bytes,
        grace_seconds=settings.job_stop_grace_seconds,
        autoscaling=settings.ray_autoscaling,
    )


def _for_ray(spec: JobSpec, folder: Path) -> JobSpec:
    """The spec with what the manifest asks Ray to reserve; 1 CPU when it says nothing,
    so a job never runs on a head without CPUs and an autoscaler sees it as demand."""
    from dtaas.execution.ray import RayJobSpec, Resources

    manifest = twins.manifest_in(folder)
    asked = manifest.resources if manifest else None
    resources = Resources(
        cpus=asked.cpu if asked is not None and asked.cpu is not None else 1.0,
        gpus=asked.gpu if asked is not None else None,
        memory_bytes=parse_memory(asked.memory) if asked and asked.memory is not None else None,
    )
    fields = {name: getattr(spec, name) for name in JobSpec.__dataclass_fields__}
    return RayJobSpec(**fields, resources=resources)


def _mib(value: int | None) -> str:
    return f"{value // 1024**2} MiB" if value else "-"


def _limits(settings: Settings, folder: Path, phase: str) -> Limits:
    manifest = twins.manifest_in(folder)
    resources = manifest.resources if manifest else None
    wall = settings.job_default_wall_time_seconds
    memory = settings.job_default_memory_bytes
    cpu_seconds = None
    if resources is not None:
        if resources.wall_time is not None:
            wall = parse_duration(resources.wall_time)
        if resources.memory is not None:
            memory = parse_memory(resources.memory)
        if resources.cpu is not None:
            cpu_seconds = max(1, int(resources.cpu * wall))
    if phase == snapshots.SAVE_PHASE:
        # The instance keeps running meanwhile; a save that hangs must not hold it up.
        wall = min(wall, settings.snapshot_save_timeout_seconds)
    return Limits(
        wall_time_seconds=wall,
        memory_bytes=memory,
        cpu_seconds=cpu_seconds,
        processes=settings.job_max_processes,
        file_size_bytes=settings.job_max_file_bytes,
    )


def _free_port() -> int:
    """A loopback port free now, for a service DT's phase to listen on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def build_spec(
    settings: Settings,
    instance: Instance,
    job: Job,
    *,
    sandboxed: bool,
    common_writable: bool = False,
) -> JobSpec:
    """How to run one phase: the command, its place, environment, limits and mounts.

    ``common_writable``: the owner may write ``common/`` (as in the library), so their
    job may too.
    """
    folder = service.working_copy(settings, instance)
    area, _, rest = instance.twin_path.partition("/")
    files = settings.resolved_files_dir
    owner_library = files / instance.owner_name
    common = files / COMMON
    inside_dt = f"{WORKSPACE}/{rest}" if area != COMMON else f"{WORKSPACE}/{COMMON}/{rest}"
    cwd_inside = inside_dt if sandboxed else str(folder)
    common_inside = f"{WORKSPACE}/{COMMON}" if sandboxed else str(common)
    manifest = twins.manifest_in(folder)
    override = manifest.phases.get(job.phase) if manifest else None
    argv = ["/bin/sh", "-c", override.command] if override else [f"./lifecycle/{job.phase}"]
    env = {
        "PATH": PATH,
        "HOME": "/tmp" if sandboxed else str(folder),  # noqa: S108  # the job's private /tmp
        "LANG": "C.UTF-8",
        "DTAAS_INSTANCE_ID": str(instance.id),
        "DTAAS_JOB_ID": str(job.id),
        "DTAAS_PHASE": job.phase,
        "DTAAS_DT": instance.twin_path,
        "DTAAS_PARAMS_FILE": f"{cwd_inside}/params.json",
        "DTAAS_COMMON_DIR": common_inside,
        "DTAAS_WORKSPACE": WORKSPACE if sandboxed else str(owner_library),
        "DTAAS_STATE_DIR": f"{cwd_inside}/{snapshots.STATE_DIR}",
    }
    if (job.provenance or {}).get("restore"):
        env["DTAAS_RESTORE"] = "1"
    # The platform services the manifest asks for, and the instance's MQTT topic prefix.
    env.update(
        services.connection_env(
            settings, manifest.services if manifest else [], instance.id, instance.owner_name
        )
    )
    if manifest and manifest.serve and manifest.serve.phase == job.phase:
        env["DTAAS_HTTP_PORT"] = str(_free_port())
    env.update(
        accounts.provision(
            settings,
            instance_id=instance.id,
            owner=instance.owner_name,
            kinds=manifest.services if manifest else [],
        )
    )
    for name, value in instance.values.items():
        env[f"DTAAS_PARAM_{name.upper()}"] = _env_value(value)
    out, err = service.log_paths(settings, job)
    # Kind by kind, not the library whole: bwrap would otherwise make the mount point
    # of /workspace/common in the owner's real library folder.
    mounts = [
        (owner_library / kind, f"{WORKSPACE}/{kind}", True)
        for kind in KINDS
        if (owner_library / kind).is_dir()
    ]
    mounts += [(common, f"{WORKSPACE}/{COMMON}", common_writable), (folder, inside_dt, True)]
    return JobSpec(
        job_id=job.id,
        argv=argv,
        cwd=folder,
        env=env,
        stdout=out,
        stderr=err,
        limits=_limits(settings, folder, job.phase),
        mounts=mounts,
        inside_cwd=cwd_inside,
    )


def _describe(outcome: JobOutcome, limits: Limits) -> str:
    if outcome.reason == EndReason.EXITED:
        if outcome.exit_code == 0:
            return "exited with status 0"
        if outcome.exit_code is None and outcome.signal is not None:
            return f"killed by signal {outcome.signal}"
        return f"exited with status {outcome.exit_code}"
    return _REASONS[outcome.reason].format(
        wall=f"{int(limits.wall_time_seconds or 0)} s",
        memory=_mib(limits.memory_bytes),
        processes=limits.processes,
    )


class Supervisor:
    """Runs the tick loop in a thread; ``tick()`` is also callable directly (tests)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        executors: dict[str, Executor] | None = None,
        on_change: Callable[[Job], None] | None = None,
        pack_in_background: bool = True,
    ) -> None:
        """``pack_in_background=False`` packs snapshots inside ``tick`` (tests that drive
        ticks on one connection)."""
        self.settings = settings
        self.sessions = sessions
        self.executors = executors or executors_for(settings)
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_file: IO[str] | None = None
        self.pack_in_background = pack_in_background
        self._warned: dict[str, float] = {}
        self._packing: set[int] = set()
        self._packing_lock = threading.Lock()
        self._pack_threads: list[threading.Thread] = []

    # --- running ----------------------------------------------------------------------

    def acquire(self) -> bool:
        """Become the site's one supervisor; False if another process already is."""
        path = self.settings.data_dir.resolve() / "supervisor.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def start(self) -> bool:
        """Start the loop thread if this process may supervise."""
        if not self.acquire():
            log.info("another process supervises jobs pid=%s", os.getpid())
            return False
        self._thread = threading.Thread(target=self._run, name="dtaas-supervisor", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop the loop; running jobs go on and are re-attached by the next supervisor."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._lock_file is not None:
            self._lock_file.close()

    def _run(self) -> None:
        log.info("supervisor started")
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("supervisor tick failed; trying again")
            self._stop.wait(TICK_SECONDS)

    # --- one tick -------------------------------------------------------------------------

    def tick(self) -> None:
        """Follow active jobs, then start queued ones where there is room."""
        with self.sessions() as session:
            for job in session.scalars(
                select(Job).where(
                    Job.state.in_((JobState.STARTING, JobState.RUNNING, JobState.CANCELLING))
                )
            ).all():
                self._follow(session, job)
            self._start_queued(session)
            self._start_auto_snapshots(session)
            waiting = session.scalars(
                select(Snapshot.id).where(Snapshot.state == SnapshotState.ARCHIVING)
            ).all()
        for snapshot_id in waiting:
            self._pack(snapshot_id)

    def _pack(self, snapshot_id: int) -> None:
        """Pack a snapshot in a thread of its own: a large working copy takes a while."""
        if not self.pack_in_background:
            snapshots.pack_snapshot(self.settings, self.sessions, snapshot_id)
            return
        with self._packing_lock:
            if snapshot_id in self._packing:
                return
            self._packing.add(snapshot_id)

        def run() -> None:
            try:
                snapshots.pack_snapshot(self.settings, self.sessions, snapshot_id)
            except Exception:
                log.exception("packing failed snapshot_id=%s", snapshot_id)
            finally:
                with self._packing_lock:
                    self._packing.discard(snapshot_id)

        thread = threading.Thread(target=run, name=f"dtaas-pack-{snapshot_id}", daemon=True)
        self._pack_threads.append(thread)
        thread.start()

    def wait_for_packing(self, timeout: float = 60) -> None:
        """Join the packing threads started so far (tests, shutdown)."""
        for thread in list(self._pack_threads):
            thread.join(timeout)
        self._pack_threads = [t for t in self._pack_threads if t.is_alive()]

    def _start_auto_snapshots(self, session: Session) -> None:
        now = utcnow()
        for instance in session.scalars(
            select(Instance).where(
                Instance.auto_snapshot_minutes.is_not(None), Instance.state == InstanceState.BUSY
            )
        ).all():
            last = session.scalars(
                select(Snapshot.created_at)
                .where(Snapshot.instance_id == instance.id, Snapshot.auto.is_(True))
                .order_by(Snapshot.id.desc())
            ).first()
            since = last or instance.updated_at
            if (now - since).total_seconds() < 60 * (instance.auto_snapshot_minutes or 0):
                continue
            if service.snapshot_in_progress(session, instance.id) is not None:
                continue
            snapshots.start_snapshot(
                session=session, settings=self.settings, instance=instance, auto=True
            )

    def _follow(self, session: Session, job: Job) -> None:
        executor = self.executors.get(job.executor)
        if executor is None:
            self._finish(
                session, job, None, f"the executor {job.executor!r} is not available on this site"
            )
            return
        if job.handle is None:
            # Persisted as starting; the platform stopped before it saved the handle,
            # maybe after the job had started: the executor knows.
            found = executor.find(job.id)
            if found is None:
                self._finish(session, job, None, "the platform restarted before the job started")
                return
            job.handle = found
            job.started_at = job.started_at or utcnow()
            if job.state == JobState.STARTING:
                job.state = JobState.RUNNING
            session.commit()
            log.info("job re-attached without its handle job_id=%s", job.id)
        if job.state == JobState.CANCELLING and not job.handle.get("stop_sent"):
            executor.stop(job.handle, grace=self.settings.job_stop_grace_seconds)
            job.handle = {**job.handle, "stop_sent": True}
            session.commit()
        try:
            outcome = executor.poll(job.handle)
        except DtaasError as exc:  # e.g. the Ray cluster is unreachable: try next tick
            self._warn_unavailable(job.executor, exc)
            return
        if outcome is not None:
            folder = service.working_copy(self.settings, job.instance)
            limits = _limits(self.settings, folder, job.phase) if folder.is_dir() else Limits()
            self._finish(session, job, outcome, _describe(outcome, limits))

    def _warn_unavailable(self, executor: str, exc: DtaasError) -> None:
        now = time.monotonic()
        if now - self._warned.get(executor, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS:
            self._warned[executor] = now
            log.warning("executor unavailable executor=%s error=%s", executor, exc)

    def _finish(self, session: Session, job: Job, outcome: JobOutcome | None, reason: str) -> None:
        if outcome is not None and outcome.succeeded:
            job.state = JobState.SUCCEEDED
        elif job.state == JobState.CANCELLING or (
            outcome is not None and outcome.reason == EndReason.CANCELLED
        ):
            job.state = JobState.CANCELLED
        else:
            job.state = JobState.FAILED
        job.reason = reason
        job.ended_at = utcnow()
        if outcome is not None:
            job.exit_code = outcome.exit_code
            job.cpu_seconds = outcome.cpu_seconds
            job.max_rss_bytes = outcome.max_rss_bytes
            job.wall_seconds = outcome.wall_seconds
        if job.phase == snapshots.SAVE_PHASE:
            snapshots.on_save_finished(session, job)
        instance = job.instance
        remaining = [j for j in instance.jobs if j.id != job.id and j.state in service.ACTIVE]
        cleaned = False
        if instance.state == InstanceState.CLEANING and job.phase == "clean":
            cleaned = job.state == JobState.SUCCEEDED
            instance.state = (
                InstanceState.CLEANED if cleaned else service.state_before_clean(instance)
            )
        elif job.phase == "terminate" or (
            instance.state == InstanceState.TERMINATING and not remaining
        ):
            service.mark_terminated(instance)
            accounts.revoke(self.settings, instance.id)
        elif instance.state == InstanceState.BUSY and not remaining:
            instance.state = InstanceState.READY
        session.commit()
        if cleaned:
            service.remove_working_copy(self.settings, instance)
        log.info(
            "job ended job_id=%s phase=%s state=%s reason=%s",
            job.id,
            job.phase,
            job.state.value,
            reason,
        )
        if self.on_change is not None:
            self.on_change(job)

    def _start_queued(self, session: Session) -> None:
        running = session.scalars(
            select(Job).where(
                Job.state.in_((JobState.STARTING, JobState.RUNNING, JobState.CANCELLING))
            )
        ).all()
        per_user = Counter(job.owner_id for job in running)
        busy_instances = {job.instance_id for job in running}
        slots = self.settings.jobs_max_running - len(running)
        for job in session.scalars(
            select(Job).where(Job.state == JobState.QUEUED).order_by(Job.id)
        ).all():
            if slots <= 0:
                return
            if job.instance_id in busy_instances and job.phase != snapshots.SAVE_PHASE:
                continue  # one phase at a time per instance, in order; save runs beside
            if per_user[job.owner_id] >= self.settings.jobs_max_running_per_user:
                continue
            self._launch(session, job)
            slots -= 1
            per_user[job.owner_id] += 1
            busy_instances.add(job.instance_id)

    def _launch(self, session: Session, job: Job) -> None:
        executor = self.executors.get(job.executor)
        if executor is None:
            job.handle = {}
            self._finish(
                session,
                job,
                None,
                f"the executor {job.executor!r} is not available on this site "
                f"(it has: {', '.join(self.executors)})",
            )
            return
        instance = job.instance
        job.state = JobState.STARTING
        session.commit()  # persist the intent: a crash now is recorded as such next tick
        sandboxed = getattr(executor, "bwrap", None) is not None
        owner = session.get(User, job.owner_id)
        try:
            spec = build_spec(
                self.settings,
                instance,
                job,
                sandboxed=sandboxed,
                common_writable=owner is not None
                and Permission.WRITE_COMMON in ROLE_PERMISSIONS[owner.role],
            )
            if executor.name == "ray":
                spec = _for_ray(spec, spec.cwd)
            spec.stdout.parent.mkdir(parents=True, exist_ok=True)
            handle = executor.start(spec)
        except (OSError, DtaasError, psycopg.Error) as exc:
            # DtaasError: e.g. the cluster is unreachable; psycopg: the instance's database
            log.exception("job could not start job_id=%s", job.id)
            job.handle = {}
            self._finish(session, job, None, f"the job could not start: {exc}")
            return
        job.handle = handle
        job.state = JobState.RUNNING
        job.started_at = utcnow()
        job.provenance = {
            **job.provenance,
            "command": shlex.join(spec.argv),
            "limits": {
                "wall_time_seconds": spec.limits.wall_time_seconds,
                "memory_bytes": spec.limits.memory_bytes,
                "cpu_seconds": spec.limits.cpu_seconds,
                "processes": spec.limits.processes,
            },
            "sandbox": handle.get("sandbox"),
        }
        if "DTAAS_HTTP_PORT" in spec.env:
            job.provenance = {**job.provenance, "http_port": int(spec.env["DTAAS_HTTP_PORT"])}
        session.commit()
        log.info("job running job_id=%s phase=%s", job.id, job.phase)
        if self.on_change is not None:
            self.on_change(job)
