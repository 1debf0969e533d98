"""Instances and their state machine; phases become jobs that the supervisor runs.

States of an instance and what each allows:

    ready ──run phase──▶ busy ──job ends──▶ ready
      │ ▲                  │
      │ └──────────────────┘ (terminate while busy stops the phase first)
      ├──terminate──▶ terminating ──▶ terminated ──clean──▶ cleaning ──▶ cleaned
      └──clean──────────────────────────────────────────▶ cleaning ──▶ cleaned

Without a clean script, clean goes straight to cleaned. A clean script that fails or is
cancelled leaves the working copy and returns the instance to where it was (ready or
terminated), so the clean can be looked into and run again.

Every change is committed before it is acted on; the supervisor (``supervisor.py``) starts
queued jobs and records how they end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.db import utcnow
from dtaas.errors import Conflict, InvalidInput, NotFound
from dtaas.library import service as library
from dtaas.lifecycle.models import Instance, InstanceState, Job, JobState, Snapshot, SnapshotState
from dtaas.security.permissions import Permission, Principal, require
from dtaas.services import accounts
from dtaas.twins import service as twins

log = logging.getLogger(__name__)

ACTIVE = (JobState.QUEUED, JobState.STARTING, JobState.RUNNING, JobState.CANCELLING)
EXECUTORS = ("local", "ray")
SNAPSHOT_IN_PROGRESS = (SnapshotState.SAVING, SnapshotState.ARCHIVING)
# Phases the platform runs itself: save as part of a snapshot, restore on re-spawn.
PLATFORM_PHASES = {"save": "POST /instances/{id}/snapshots", "restore": "re-spawning a snapshot"}
ALLOWED: dict[InstanceState, str] = {
    InstanceState.READY: "run a phase, terminate or clean",
    InstanceState.BUSY: "wait for the running phase or terminate",
    InstanceState.TERMINATING: "wait until terminate has finished",
    InstanceState.TERMINATED: "clean or delete",
    InstanceState.CLEANING: "wait until clean has finished",
    InstanceState.CLEANED: "delete",
}


def instance_dir(settings: Settings, instance_id: int) -> Path:
    """Where an instance keeps its working copy (``dt/``), logs and job files."""
    return settings.data_dir.resolve() / "instances" / str(instance_id)


def working_copy(settings: Settings, instance: Instance) -> Path:
    return instance_dir(settings, instance.id) / "dt"


def log_paths(settings: Settings, job: Job) -> tuple[Path, Path]:
    """The stdout and stderr files of a job."""
    logs = instance_dir(settings, job.instance_id) / "logs"
    return logs / f"job-{job.id}.out", logs / f"job-{job.id}.err"


def content_hash(folder: Path) -> str:
    """SHA-256 over the relative paths, modes and contents of a folder's files."""
    digest = hashlib.sha256()
    for current, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(current) / name
            relative = path.relative_to(folder).as_posix()
            digest.update(relative.encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + str(path.readlink()).encode())
                continue
            digest.update(oct(path.stat().st_mode & 0o777).encode())
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _conflict(instance: Instance, wanted: str) -> Conflict:
    return Conflict(
        f"Instance {instance.id} is {instance.state.value}, so it cannot {wanted}; in this "
        f"state you can {ALLOWED[instance.state]}.",
        loc=["instance_id"],
    )


# --- instances --------------------------------------------------------------------------------


def create_instance(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    twin_path: str,
    values: dict[str, Any] | None = None,
    configuration_id: int | None = None,
    name: str | None = None,
) -> Instance:
    """Deploy a DT: copy it into a working copy with its parameter values.

    Raises: PermissionDenied; NotFound; InvalidInput for bad values; Conflict if the DT
    is not valid.
    """
    require(actor, Permission.OPERATE)
    configuration_name = None
    if configuration_id is not None:
        configuration = twins.get_configuration(
            session=session, actor=actor, configuration_id=configuration_id
        )
        if configuration.twin_path != twin_path.strip("/"):
            raise InvalidInput(
                f"Configuration {configuration_id} belongs to {configuration.twin_path}.",
                loc=["configuration_id"],
            )
        values = {**configuration.values, **(values or {})}
        configuration_name = configuration.name
    detail = twins.get_twin(settings=settings, actor=actor, path=twin_path)
    if not detail.valid:
        first = next(p for p in detail.problems if p.severity == "error")
        where = f"{first.file}:{first.line}:{first.column}" if first.line else first.file
        raise Conflict(
            f"{detail.path} has {detail.errors} error(s), e.g. {where}: {first.message}; "
            "fix them first.",
            loc=["twin_path"],
        )
    manifest = twins.manifest_of(settings=settings, actor=actor, path=detail.path)
    problems = twins.check_values(manifest, values or {})
    if problems:
        raise InvalidInput(problems[0][0], loc=problems[0][1], problems=problems)
    effective = twins.effective_values(manifest, values or {})
    source = library.find_folder(settings=settings, actor=actor, path=detail.path, write=False)
    instance = Instance(
        owner_id=actor.user_id,
        owner_name=actor.username,
        twin_path=detail.path,
        name=name or detail.name,
        state=InstanceState.READY,
        values=effective,
        configuration_name=configuration_name,
        content_hash="",
        executor=(manifest.executor if manifest and manifest.executor else settings.executor),
    )
    session.add(instance)
    session.flush()
    target = working_copy(settings, instance)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / "logs").mkdir(exist_ok=True)
        shutil.copytree(source.real, target, symlinks=True)
        (target / "params.json").write_text(json.dumps(effective, indent=2))
        instance.content_hash = content_hash(source.real)
        session.commit()
    except BaseException:
        session.rollback()
        shutil.rmtree(instance_dir(settings, instance.id), ignore_errors=True)
        raise
    log.info(
        "instance created instance_id=%s twin=%s actor=%s", instance.id, detail.path, actor.username
    )
    return instance


def list_instances(*, session: Session, actor: Principal) -> list[Instance]:
    """The caller's instances, newest first."""
    return list(
        session.scalars(
            select(Instance).where(Instance.owner_id == actor.user_id).order_by(Instance.id.desc())
        )
    )


def get_instance(*, session: Session, actor: Principal, instance_id: int) -> Instance:
    """One of the caller's instances.

    Raises: NotFound (also for another user's).
    """
    instance = session.get(Instance, instance_id)
    if instance is None or instance.owner_id != actor.user_id:
        raise NotFound(f"There is no instance {instance_id}.", loc=["instance_id"])
    return instance


def _phase_exists(settings: Settings, instance: Instance, phase: str) -> bool:
    folder = working_copy(settings, instance)
    if (folder / "lifecycle" / phase).is_file():
        return True
    manifest = twins.manifest_in(folder)
    return manifest is not None and phase in manifest.phases


def available_phases(settings: Settings, instance: Instance) -> list[str]:
    """The phases this instance's DT has (scripts and manifest overrides)."""
    folder = working_copy(settings, instance)
    if not folder.is_dir():
        return []
    return twins.phases_in(folder)


def queue_job(session: Session, instance: Instance, phase: str) -> Job:
    job = Job(
        instance_id=instance.id,
        owner_id=instance.owner_id,
        phase=phase,
        state=JobState.QUEUED,
        executor=instance.executor,
        provenance={
            "twin_path": instance.twin_path,
            "content_hash": instance.content_hash,
            "values": instance.values,
            "configuration": instance.configuration_name,
            "executor": instance.executor,
        },
    )
    session.add(job)
    return job


def run_phase(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int, phase: str
) -> Job:
    """Queue a lifecycle phase of an instance; the supervisor starts it when there is room.

    Raises: PermissionDenied; NotFound; InvalidInput for a phase the DT does not have;
    Conflict when the instance's state does not allow it.
    """
    require(actor, Permission.OPERATE)
    instance = get_instance(session=session, actor=actor, instance_id=instance_id)
    if phase in ("terminate", "clean"):
        # These two are the instance's own transitions when asked for as phases; the
        # script must exist, or /terminate and /clean are what the caller wants.
        _check_phase(settings, instance, phase)
        act = terminate if phase == "terminate" else clean
        act(session=session, settings=settings, actor=actor, instance_id=instance_id)
        return session.scalars(
            select(Job).where(Job.instance_id == instance.id).order_by(Job.id.desc())
        ).first() or _missing_job(instance)
    if phase in PLATFORM_PHASES:
        raise InvalidInput(
            f"{phase} is not run on its own: it runs by "
            f"{PLATFORM_PHASES[phase].format(id=instance.id)}.",
            loc=["phase"],
        )
    if instance.state != InstanceState.READY:
        raise _conflict(instance, f"run {phase}")
    _check_phase(settings, instance, phase)
    job = queue_job(session, instance, phase)
    instance.state = InstanceState.BUSY
    session.commit()
    log.info("phase queued instance_id=%s phase=%s job_id=%s", instance.id, phase, job.id)
    return job


def snapshot_in_progress(session: Session, instance_id: int) -> Snapshot | None:
    """The snapshot of the instance still being taken, if any."""
    return session.scalars(
        select(Snapshot).where(
            Snapshot.instance_id == instance_id, Snapshot.state.in_(SNAPSHOT_IN_PROGRESS)
        )
    ).first()


def refuse_while_saving(session: Session, instance: Instance, wanted: str) -> None:
    """Raises Conflict while a snapshot of the instance is being taken."""
    taking = snapshot_in_progress(session, instance.id)
    if taking is not None:
        raise Conflict(
            f"Snapshot {taking.id} of instance {instance.id} is being taken, so the instance "
            f"cannot {wanted} now; wait until the snapshot is ready or failed.",
            loc=["instance_id"],
        )


def _check_phase(settings: Settings, instance: Instance, phase: str) -> None:
    if not _phase_exists(settings, instance, phase):
        have = ", ".join(available_phases(settings, instance)) or "none"
        raise InvalidInput(
            f"{instance.twin_path} has no phase {phase!r}; its phases are: {have}.",
            loc=["phase"],
        )


def _missing_job(instance: Instance) -> Job:
    raise NotFound(f"Instance {instance.id} has no job yet.", loc=["instance_id"])


def _active_jobs(session: Session, instance: Instance) -> list[Job]:
    return list(
        session.scalars(select(Job).where(Job.instance_id == instance.id, Job.state.in_(ACTIVE)))
    )


def terminate(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int
) -> Instance:
    """Stop a running phase, then run the DT's terminate script (if it has one).

    Raises: PermissionDenied; NotFound; Conflict when already terminated or cleaned.
    """
    require(actor, Permission.OPERATE)
    instance = get_instance(session=session, actor=actor, instance_id=instance_id)
    if instance.state not in (InstanceState.READY, InstanceState.BUSY):
        raise _conflict(instance, "terminate")
    for job in _active_jobs(session, instance):
        _request_cancel(job)
    if _phase_exists(settings, instance, "terminate"):
        queue_job(session, instance, "terminate")
        instance.state = InstanceState.TERMINATING
    elif _active_jobs(session, instance):
        instance.state = InstanceState.TERMINATING
    else:
        mark_terminated(instance)
        accounts.revoke(settings, instance.id)
    session.commit()
    log.info("instance terminating instance_id=%s state=%s", instance.id, instance.state.value)
    return instance


def mark_terminated(instance: Instance) -> None:
    instance.state = InstanceState.TERMINATED
    instance.terminated_at = utcnow()


def state_before_clean(instance: Instance) -> InstanceState:
    """Where a clean that did not finish leaves the instance."""
    return InstanceState.READY if instance.terminated_at is None else InstanceState.TERMINATED


def _request_cancel(job: Job) -> None:
    if job.state == JobState.QUEUED:
        job.state = JobState.CANCELLED
        job.reason = "cancelled before it started"
        job.ended_at = utcnow()
    elif job.state in (JobState.STARTING, JobState.RUNNING):
        # The supervisor sends the stop; persisting the intent first survives a crash.
        job.state = JobState.CANCELLING


def clean(*, session: Session, settings: Settings, actor: Principal, instance_id: int) -> Instance:
    """Run the DT's clean script (if any), then remove the working copy.

    Raises: PermissionDenied; NotFound; Conflict unless the instance is ready or
    terminated.
    """
    require(actor, Permission.OPERATE)
    instance = get_instance(session=session, actor=actor, instance_id=instance_id)
    if instance.state not in (InstanceState.READY, InstanceState.TERMINATED):
        raise _conflict(instance, "clean")
    refuse_while_saving(session, instance, "be cleaned")
    if _phase_exists(settings, instance, "clean"):
        queue_job(session, instance, "clean")
        instance.state = InstanceState.CLEANING
        session.commit()
    else:
        instance.state = InstanceState.CLEANED
        session.commit()
        remove_working_copy(settings, instance)
    return instance


def remove_working_copy(settings: Settings, instance: Instance) -> None:
    """Delete an instance's working copy and its database schema; its logs stay."""
    shutil.rmtree(working_copy(settings, instance), ignore_errors=True)
    accounts.drop(settings, instance.id)
    log.info("working copy removed instance_id=%s", instance.id)


def delete_instance(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int
) -> None:
    """Forget an instance, its jobs and logs.

    Raises: PermissionDenied; NotFound; Conflict while a job is active.
    """
    require(actor, Permission.OPERATE)
    instance = get_instance(session=session, actor=actor, instance_id=instance_id)
    if instance.state in (InstanceState.BUSY, InstanceState.TERMINATING, InstanceState.CLEANING):
        raise _conflict(instance, "be deleted")
    refuse_while_saving(session, instance, "be deleted")
    session.delete(instance)
    session.commit()
    shutil.rmtree(instance_dir(settings, instance_id), ignore_errors=True)
    accounts.drop(settings, instance_id)
    log.info("instance deleted instance_id=%s actor=%s", instance_id, actor.username)


# --- jobs -------------------------------------------------------------------------------------


def list_jobs(*, session: Session, actor: Principal, instance_id: int) -> list[Job]:
    """An instance's jobs, oldest first."""
    return list(get_instance(session=session, actor=actor, instance_id=instance_id).jobs)


def get_job(*, session: Session, actor: Principal, job_id: int) -> Job:
    """One of the caller's jobs.

    Raises: NotFound.
    """
    job = session.get(Job, job_id)
    if job is None or job.owner_id != actor.user_id:
        raise NotFound(f"There is no job {job_id}.", loc=["job_id"])
    return job


def queue_position(*, session: Session, job: Job) -> int | None:
    """1 for the next queued job to start; None unless the job is queued."""
    if job.state != JobState.QUEUED:
        return None
    earlier = session.scalars(
        select(Job.id).where(Job.state == JobState.QUEUED, Job.id < job.id)
    ).all()
    return len(earlier) + 1


def cancel_job(*, session: Session, actor: Principal, job_id: int) -> Job:
    """Ask a job to stop; the supervisor records how it ended.

    Raises: PermissionDenied; NotFound; Conflict if it already ended.
    """
    require(actor, Permission.OPERATE)
    job = get_job(session=session, actor=actor, job_id=job_id)
    if job.state.is_terminal() or job.state == JobState.CANCELLING:
        raise Conflict(f"Job {job.id} is already {job.state.value}; nothing to cancel.")
    _request_cancel(job)
    others = [j for j in _active_jobs(session, job.instance) if j.id != job.id]
    if job.state == JobState.CANCELLED and not others:
        instance = job.instance
        if instance.state == InstanceState.TERMINATING:
            mark_terminated(instance)
        elif instance.state == InstanceState.CLEANING:
            instance.state = state_before_clean(instance)
        else:
            instance.state = InstanceState.READY
    session.commit()
    log.info("job cancel requested job_id=%s actor=%s", job.id, actor.username)
    return job


def read_log(*, settings: Settings, job: Job, stream: str, offset: int = 0) -> bytes:
    """A job's stdout or stderr from ``offset`` on (empty before the job wrote anything)."""
    out, err = log_paths(settings, job)
    path = out if stream == "stdout" else err
    if not path.exists():
        return b""
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read()
