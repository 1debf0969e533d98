"""Snapshots: save an instance (running or not) and re-spawn new instances from it.

Saving is cooperative. If the DT has a ``save`` phase, it runs as a job beside whatever
phase is running, with ``DTAAS_STATE_DIR`` (``.dtaas-state`` in the working copy) to write
its state into, bounded by ``snapshot_save_timeout_seconds``. Then the supervisor packs
the working copy with that state (``archive.py``). A snapshot is listed as ``ready`` only
once its file is complete; a failed save or pack is ``failed`` with the reason, and the
instance is never touched by either.

Re-spawning unpacks a snapshot into a new instance and runs its ``restore`` phase, or
``execute`` with ``DTAAS_RESTORE=1``, with the state where it was saved.

Snapshots count towards their owner's storage quota (``accounting``): a snapshot is not
started when the owner's storage is full (a periodic one is recorded as failed with the
reason, keeping the older ones), an upload stops as soon as it would pass the quota, and
a packed snapshot that would pass it is marked failed and its file removed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dtaas.accounting.budget import ADVICE, StorageBudget
from dtaas.config import Settings
from dtaas.db import utcnow
from dtaas.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from dtaas.library import service as library
from dtaas.lifecycle import archive, service
from dtaas.lifecycle.models import (
    Instance,
    InstanceState,
    Job,
    JobState,
    Snapshot,
    SnapshotState,
)
from dtaas.security.permissions import Permission, Principal, require

log = logging.getLogger(__name__)

SAVE_PHASE = "save"
RESTORE_PHASE = "restore"
STATE_DIR = ".dtaas-state"
IN_PROGRESS = service.SNAPSHOT_IN_PROGRESS
SAVABLE = (InstanceState.READY, InstanceState.BUSY, InstanceState.TERMINATED)


def snapshots_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "snapshots"


def snapshot_file(settings: Settings, snapshot_id: int) -> Path:
    return snapshots_dir(settings) / f"{snapshot_id}.tar.zst"


def state_dir(settings: Settings, instance: Instance) -> Path:
    return service.working_copy(settings, instance) / STATE_DIR


# --- storage (for accounting) ------------------------------------------------------------------


def bytes_used(*, session: Session, owner_id: int) -> int:
    """What a user's ready snapshots take: the sizes of their files."""
    total = session.scalar(
        select(func.coalesce(func.sum(Snapshot.size_bytes), 0)).where(
            Snapshot.owner_id == owner_id, Snapshot.state == SnapshotState.READY
        )
    )
    return int(total or 0)


def instances_bytes_used(
    *,
    session: Session,
    settings: Settings,
    owner_id: int,
    measure: Callable[[Path], int] = library.tree_bytes,
) -> int:
    """What a user's instances take on disk: working copies, logs and job files.

    ``measure`` walks one instance's folder (accounting passes one that caches).
    """
    ids = session.scalars(select(Instance.id).where(Instance.owner_id == owner_id)).all()
    return sum(measure(service.instance_dir(settings, instance_id)) for instance_id in ids)


def _budget_of(
    session: Session, settings: Settings, *, owner_id: int, username: str
) -> StorageBudget:
    # Imported here: accounting measures storage through this module, so importing it at
    # load time would make the two modules import each other.
    from dtaas.accounting import service as accounting

    return accounting.budget_for(
        session=session, settings=settings, user_id=owner_id, username=username
    )


def _prunable_bytes(session: Session, instance: Instance) -> int:
    """The periodic snapshots that one more ready one would prune, in bytes."""
    ready = session.scalars(
        select(Snapshot.size_bytes)
        .where(
            Snapshot.instance_id == instance.id,
            Snapshot.auto.is_(True),
            Snapshot.state == SnapshotState.READY,
        )
        .order_by(Snapshot.id.desc())
    ).all()
    return sum(size or 0 for size in ready[max(0, instance.auto_snapshot_keep - 1) :])


# --- taking a snapshot -----------------------------------------------------------------------


def create_snapshot(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    instance_id: int,
    name: str | None = None,
) -> Snapshot:
    """Start saving an instance; the snapshot is ready once its file is complete.

    Raises: PermissionDenied; NotFound; Conflict if the instance has no working copy or
    a snapshot of it is already being taken; QuotaExceeded when the owner's storage is full.
    """
    require(actor, Permission.OPERATE)
    instance = service.get_instance(session=session, actor=actor, instance_id=instance_id)
    return start_snapshot(session=session, settings=settings, instance=instance, name=name)


def start_snapshot(
    *,
    session: Session,
    settings: Settings,
    instance: Instance,
    name: str | None = None,
    auto: bool = False,
) -> Snapshot:
    """``create_snapshot`` without the caller checks (also used for periodic snapshots).

    A periodic snapshot refused for the quota is recorded as failed with the reason, not
    raised: the supervisor goes on, and the older snapshots stay.
    """
    if instance.state not in SAVABLE:
        raise Conflict(
            f"Instance {instance.id} is {instance.state.value}, so it cannot be saved; an "
            "instance can be saved while it is ready, busy or terminated.",
            loc=["instance_id"],
        )
    if instance.executor == "ray" and settings.ray_shared_dir is None:
        # Without a shared directory a Ray job works in an uploaded copy of the working
        # copy: neither its save script's state nor what it wrote ever reach the platform.
        raise Conflict(
            f"Instance {instance.id} runs on Ray without a shared data directory, so the "
            "platform cannot reach what its jobs write and cannot save it; an administrator "
            "sets DTAAS_RAY_SHARED_DIR to storage every Ray node mounts (docs/ray.md).",
            loc=["instance_id"],
        )
    service.refuse_while_saving(session, instance, "be saved again")
    try:
        _require_room(session, settings, instance, auto=auto)
    except QuotaExceeded as exc:
        if not auto:
            raise
        return _refuse_auto(session, instance, exc.message)
    state = state_dir(settings, instance)
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    snapshot = Snapshot(
        owner_id=instance.owner_id,
        instance_id=instance.id,
        twin_path=instance.twin_path,
        name=name or f"{instance.name} {utcnow():%Y-%m-%d %H:%M:%S}",
        state=SnapshotState.ARCHIVING,
        auto=auto,
        uploaded=False,
        details={},
    )
    session.add(snapshot)
    if SAVE_PHASE in service.available_phases(settings, instance):
        job = service.queue_job(session, instance, SAVE_PHASE)
        session.flush()
        snapshot.state = SnapshotState.SAVING
        snapshot.save_job_id = job.id
    session.commit()
    log.info(
        "snapshot started snapshot_id=%s instance_id=%s state=%s",
        snapshot.id,
        instance.id,
        snapshot.state.value,
    )
    return snapshot


def _require_room(session: Session, settings: Settings, instance: Instance, *, auto: bool) -> None:
    """Raises QuotaExceeded when the owner's storage is full (a snapshot's size is known
    only once it is packed; ``pack_snapshot`` checks it then)."""
    budget = _budget_of(session, settings, owner_id=instance.owner_id, username=instance.owner_name)
    free = budget.free_bytes()
    reclaimed = _prunable_bytes(session, instance) if auto else 0
    if free is not None and free + reclaimed <= 0:
        raise budget.refusal(doing="Taking a snapshot", needed=None, loc=["instance_id"])


def _refuse_auto(session: Session, instance: Instance, reason: str) -> Snapshot:
    """Record a periodic snapshot refused for the quota; only the newest such record is
    kept, so a full quota does not add a row every period."""
    for old in session.scalars(
        select(Snapshot).where(
            Snapshot.instance_id == instance.id,
            Snapshot.auto.is_(True),
            Snapshot.state == SnapshotState.FAILED,
        )
    ).all():
        if old.details.get("quota_exceeded"):
            session.delete(old)
    now = utcnow()
    snapshot = Snapshot(
        owner_id=instance.owner_id,
        instance_id=instance.id,
        twin_path=instance.twin_path,
        name=f"{instance.name} {now:%Y-%m-%d %H:%M:%S}",
        state=SnapshotState.FAILED,
        reason=reason,
        auto=True,
        uploaded=False,
        details={"quota_exceeded": True},
        created_at=now,
        completed_at=now,
    )
    session.add(snapshot)
    session.commit()
    log.info("periodic snapshot refused instance_id=%s reason=quota", instance.id)
    return snapshot


def on_save_finished(session: Session, job: Job) -> None:
    """The save job ended: pack on success, else record why the snapshot failed."""
    snapshot = session.scalars(select(Snapshot).where(Snapshot.save_job_id == job.id)).first()
    if snapshot is None or snapshot.state != SnapshotState.SAVING:
        return
    if job.state == JobState.SUCCEEDED:
        snapshot.state = SnapshotState.ARCHIVING
    else:
        snapshot.state = SnapshotState.FAILED
        snapshot.reason = (
            f"the save script {job.state.value}: {job.reason}; see the log of job {job.id}"
        )
        snapshot.completed_at = utcnow()
    log.info("snapshot save ended snapshot_id=%s state=%s", snapshot.id, snapshot.state.value)


def _metadata(instance: Instance) -> dict[str, Any]:
    return {
        "twin_path": instance.twin_path,
        "content_hash": instance.content_hash,
        "instance": {"id": instance.id, "name": instance.name, "state": instance.state.value},
        "values": instance.values,
        "configuration": instance.configuration_name,
        "executor": instance.executor,
        "jobs": [
            {
                "id": job.id,
                "phase": job.phase,
                "state": job.state.value,
                "exit_code": job.exit_code,
                "started_at": job.started_at.isoformat() if job.started_at else None,
                "ended_at": job.ended_at.isoformat() if job.ended_at else None,
            }
            for job in instance.jobs
        ],
        # No telemetry is stored yet; the range is kept in the format for when it is.
        "telemetry": None,
        "state_dir": STATE_DIR,
    }


def pack_snapshot(settings: Settings, sessions: sessionmaker[Session], snapshot_id: int) -> None:
    """Write the snapshot's file and mark it ready (or failed, with the reason)."""
    with sessions() as session:
        snapshot = session.get(Snapshot, snapshot_id)
        if snapshot is None or snapshot.state != SnapshotState.ARCHIVING:
            return
        instance = session.get(Instance, snapshot.instance_id) if snapshot.instance_id else None
        folder = service.working_copy(settings, instance) if instance else None
        if instance is None or folder is None or not folder.is_dir():
            snapshot.state = SnapshotState.FAILED
            snapshot.reason = "the instance's working copy is gone"
            snapshot.completed_at = utcnow()
            session.commit()
            return
        metadata = {**_metadata(instance), "snapshot_id": snapshot.id, "name": snapshot.name}
        session.commit()  # no transaction held while packing
        try:
            size, digest = archive.pack(folder, metadata, snapshot_file(settings, snapshot.id))
        except Exception as exc:  # a full disk, a vanished file: recorded, never half-listed
            log.exception("snapshot failed snapshot_id=%s", snapshot.id)
            snapshot.state = SnapshotState.FAILED
            snapshot.reason = f"the snapshot could not be written: {exc}"
            snapshot.completed_at = utcnow()
            session.commit()
            return
        refusal = _refusal_when_packed(session, settings, instance, snapshot, size)
        if refusal is not None:
            snapshot_file(settings, snapshot.id).unlink(missing_ok=True)
            snapshot.state = SnapshotState.FAILED
            snapshot.reason = refusal
            snapshot.details = {**metadata, "quota_exceeded": True}
            snapshot.completed_at = utcnow()
            session.commit()
            log.info("snapshot over quota snapshot_id=%s bytes=%s", snapshot.id, size)
            return
        snapshot.state = SnapshotState.READY
        snapshot.size_bytes = size
        snapshot.sha256 = digest
        snapshot.details = metadata
        snapshot.completed_at = utcnow()
        session.commit()
        log.info("snapshot ready snapshot_id=%s bytes=%s", snapshot.id, size)
        if snapshot.auto:
            _prune_auto(session, settings, instance)


def _refusal_when_packed(
    session: Session, settings: Settings, instance: Instance, snapshot: Snapshot, size: int
) -> str | None:
    """Why a packed snapshot of ``size`` bytes cannot be kept, or None if it fits.

    A periodic snapshot may use what pruning the oldest periodic one would free.
    """
    budget = _budget_of(session, settings, owner_id=instance.owner_id, username=instance.owner_name)
    free = budget.free_bytes()
    needed = size - (_prunable_bytes(session, instance) if snapshot.auto else 0)
    if free is None or needed <= free:
        return None
    return f"Its packed file was removed: keeping it {budget.describe(needed=needed)} {ADVICE}"


def _prune_auto(session: Session, settings: Settings, instance: Instance) -> None:
    ready = session.scalars(
        select(Snapshot)
        .where(
            Snapshot.instance_id == instance.id,
            Snapshot.auto.is_(True),
            Snapshot.state == SnapshotState.READY,
        )
        .order_by(Snapshot.id.desc())
    ).all()
    for old in ready[instance.auto_snapshot_keep :]:
        _remove(session, settings, old)
    session.commit()


def set_auto_snapshots(
    *,
    session: Session,
    actor: Principal,
    instance_id: int,
    minutes: int | None,
    keep: int,
) -> Instance:
    """Take a snapshot every ``minutes`` while a phase runs, keeping the last ``keep``.

    Raises: PermissionDenied; NotFound.
    """
    require(actor, Permission.OPERATE)
    instance = service.get_instance(session=session, actor=actor, instance_id=instance_id)
    instance.auto_snapshot_minutes = minutes
    instance.auto_snapshot_keep = keep
    session.commit()
    return instance


# --- managing snapshots -------------------------------------------------------------------------


def list_snapshots(
    *, session: Session, actor: Principal, instance_id: int | None = None
) -> list[Snapshot]:
    """The caller's snapshots (of one instance if given), newest first."""
    query = select(Snapshot).where(Snapshot.owner_id == actor.user_id)
    if instance_id is not None:
        service.get_instance(session=session, actor=actor, instance_id=instance_id)
        query = query.where(Snapshot.instance_id == instance_id)
    return list(session.scalars(query.order_by(Snapshot.id.desc())))


def get_snapshot(*, session: Session, actor: Principal, snapshot_id: int) -> Snapshot:
    """One of the caller's snapshots. Raises: NotFound (also for another user's)."""
    snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None or snapshot.owner_id != actor.user_id:
        raise NotFound(f"There is no snapshot {snapshot_id}.", loc=["snapshot_id"])
    return snapshot


def _require_ready(snapshot: Snapshot, wanted: str) -> None:
    if snapshot.state != SnapshotState.READY:
        hint = "wait until it is ready" if snapshot.state in IN_PROGRESS else "take a new one"
        raise Conflict(
            f"Snapshot {snapshot.id} is {snapshot.state.value}, so it cannot be {wanted}; {hint}.",
            loc=["snapshot_id"],
        )


def download_path(
    *, session: Session, settings: Settings, actor: Principal, snapshot_id: int
) -> Path:
    """The file of a ready snapshot. Raises: NotFound; Conflict unless ready."""
    snapshot = get_snapshot(session=session, actor=actor, snapshot_id=snapshot_id)
    _require_ready(snapshot, "downloaded")
    return snapshot_file(settings, snapshot.id)


def _remove(session: Session, settings: Settings, snapshot: Snapshot) -> None:
    snapshot_file(settings, snapshot.id).unlink(missing_ok=True)
    session.delete(snapshot)


def delete_snapshot(
    *, session: Session, settings: Settings, actor: Principal, snapshot_id: int
) -> None:
    """Forget a snapshot and delete its file. Raises: NotFound; Conflict while in progress."""
    require(actor, Permission.OPERATE)
    snapshot = get_snapshot(session=session, actor=actor, snapshot_id=snapshot_id)
    if snapshot.state in IN_PROGRESS:
        raise Conflict(
            f"Snapshot {snapshot.id} is {snapshot.state.value}, so it cannot be deleted yet; "
            "wait until it is ready or failed.",
            loc=["snapshot_id"],
        )
    _remove(session, settings, snapshot)
    session.commit()


async def upload_snapshot(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    body: AsyncIterator[bytes],
    name: str | None,
    expected_sha256: str | None,
    size_hint: int | None = None,
) -> Snapshot:
    """Store a snapshot file made elsewhere, once it is verified to be safe to use.

    ``size_hint`` (the request's Content-Length) refuses a file that cannot fit before it
    is sent; without it, the upload stops as soon as it would pass the quota.

    Raises: PermissionDenied; InvalidInput for a damaged, unsafe or mismatching file;
    QuotaExceeded when the file would pass the caller's storage quota.
    """
    require(actor, Permission.OPERATE)
    if expected_sha256 is not None and not _is_sha256(expected_sha256):
        raise InvalidInput(
            "The checksum must be 64 hexadecimal digits (sha256).", loc=["header", "checksum"]
        )
    budget = _budget_of(session, settings, owner_id=actor.user_id, username=actor.username)
    doing = "Uploading this snapshot"
    room = await asyncio.to_thread(budget.free_bytes)  # may walk the disk
    if room is not None and size_hint is not None and size_hint > room:
        raise budget.refusal(doing=doing, needed=size_hint, loc=["body"])
    folder = snapshots_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    received = folder / f".upload-{uuid.uuid4().hex}.partial"
    digest = hashlib.sha256()
    written = 0
    try:
        with received.open("wb") as handle:
            async for chunk in body:
                written += len(chunk)
                if room is not None and written > room:
                    raise budget.refusal(doing=doing, needed=None, loc=["body"])
                digest.update(chunk)
                handle.write(chunk)
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.lower():
            raise InvalidInput(
                f"The file's sha256 is {actual}, not {expected_sha256.lower()}: it was damaged "
                "on the way; send it again.",
                loc=["body"],
            )
        metadata = _verified(settings, received)
        snapshot = Snapshot(
            owner_id=actor.user_id,
            instance_id=None,
            twin_path=str(metadata.get("twin_path", "")),
            name=name or str(metadata.get("name") or "uploaded snapshot"),
            state=SnapshotState.READY,
            auto=False,
            uploaded=True,
            size_bytes=received.stat().st_size,
            sha256=actual,
            details=metadata,
            completed_at=utcnow(),
        )
        session.add(snapshot)
        session.flush()
        received.replace(snapshot_file(settings, snapshot.id))
        session.commit()
    except BaseException:
        session.rollback()
        received.unlink(missing_ok=True)
        raise
    log.info("snapshot uploaded snapshot_id=%s actor=%s", snapshot.id, actor.username)
    return snapshot


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value)


def _verified(settings: Settings, path: Path) -> dict[str, Any]:
    """The metadata of a snapshot file that unpacks safely; InvalidInput otherwise."""
    trial = path.with_name(f"{path.name}.check")
    try:
        metadata = archive.read_metadata(path)
        if not isinstance(metadata.get("twin_path"), str) or not isinstance(
            metadata.get("values"), dict
        ):
            raise archive.ArchiveError("snapshot.json lacks twin_path or values")
        archive.unpack(path, trial, max_bytes=settings.snapshot_max_bytes)
    except archive.ArchiveError as exc:
        raise InvalidInput(f"This is not a usable snapshot: {exc}.", loc=["body"]) from exc
    finally:
        shutil.rmtree(trial, ignore_errors=True)
    return metadata


# --- re-spawning ----------------------------------------------------------------------------------


def respawn(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    snapshot_id: int,
    name: str | None = None,
    executor: str | None = None,
) -> Instance:
    """A new instance from a snapshot, restoring its state (``restore`` or ``execute``).

    Raises: PermissionDenied; NotFound; Conflict unless the snapshot is ready and its file
    intact; InvalidInput for an unknown executor; QuotaExceeded when the unpacked copy
    would not fit in the caller's storage.
    """
    require(actor, Permission.OPERATE)
    snapshot = get_snapshot(session=session, actor=actor, snapshot_id=snapshot_id)
    _require_ready(snapshot, "re-spawned")
    budget = _budget_of(session, settings, owner_id=actor.user_id, username=actor.username)
    doing = "Re-spawning this snapshot"
    free = budget.free_bytes()
    if free is not None and free <= 0:
        raise budget.refusal(doing=doing, needed=None, loc=["snapshot_id"])
    # Its unpacked size is known only while unpacking: the quota bounds it there.
    limit = settings.snapshot_max_bytes if free is None else min(free, settings.snapshot_max_bytes)
    if executor is not None and executor not in service.EXECUTORS:
        raise InvalidInput(
            f"Unknown executor {executor!r}; choose one of: {', '.join(service.EXECUTORS)}.",
            loc=["executor"],
        )
    path = snapshot_file(settings, snapshot.id)
    try:
        archive.verify(path, snapshot.sha256 or "")
        metadata = archive.read_metadata(path)
    except archive.ArchiveError as exc:
        raise Conflict(
            f"Snapshot {snapshot.id} cannot be re-spawned: {exc}. Delete it and take or "
            "upload a new one.",
            loc=["snapshot_id"],
        ) from exc
    instance = Instance(
        owner_id=actor.user_id,
        owner_name=actor.username,
        twin_path=str(metadata["twin_path"]),
        name=name or f"{snapshot.name} (re-spawned)",
        state=InstanceState.READY,
        values=dict(metadata["values"]),
        configuration_name=metadata.get("configuration"),
        content_hash=str(metadata.get("content_hash", "")),
        executor=executor or str(metadata.get("executor") or "local"),
    )
    session.add(instance)
    session.flush()
    home = service.instance_dir(settings, instance.id)
    try:
        home.mkdir(parents=True, exist_ok=True)
        (home / "logs").mkdir(exist_ok=True)
        archive.unpack(path, service.working_copy(settings, instance), max_bytes=limit)
        phases = service.available_phases(settings, instance)
        phase = (
            RESTORE_PHASE if RESTORE_PHASE in phases else "execute" if "execute" in phases else None
        )
        if phase is not None:
            job = service.queue_job(session, instance, phase)
            job.provenance = {**job.provenance, "restore": True, "snapshot_id": snapshot.id}
            instance.state = InstanceState.BUSY
        session.commit()
    except archive.ArchiveTooLarge as exc:
        session.rollback()
        shutil.rmtree(home, ignore_errors=True)
        if free is not None and limit == free:
            raise budget.refusal(doing=doing, needed=None, loc=["snapshot_id"]) from exc
        raise Conflict(f"Snapshot {snapshot.id} cannot be re-spawned: {exc}.") from exc
    except archive.ArchiveError as exc:
        session.rollback()
        shutil.rmtree(home, ignore_errors=True)
        raise Conflict(f"Snapshot {snapshot.id} cannot be re-spawned: {exc}.") from exc
    except BaseException:
        session.rollback()
        shutil.rmtree(home, ignore_errors=True)
        raise
    log.info("instance re-spawned instance_id=%s snapshot_id=%s", instance.id, snapshot.id)
    return instance
