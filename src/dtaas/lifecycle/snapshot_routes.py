"""HTTP routes of snapshots: take, list, download, upload, delete and re-spawn."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse

from dtaas.db import SessionDep
from dtaas.lifecycle import snapshots
from dtaas.lifecycle.routes import instance_read
from dtaas.lifecycle.schemas import (
    InstanceRead,
    InstanceUpdate,
    Respawn,
    SnapshotCreate,
    SnapshotName,
    SnapshotRead,
)
from dtaas.security.deps import CurrentActor, SettingsDep

router = APIRouter(tags=["snapshots"])


@router.post("/instances/{instance_id}/snapshots", response_model=SnapshotRead, status_code=202)
def create_snapshot(
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    body: SnapshotCreate | None = None,
) -> SnapshotRead:
    """Save an instance, running or not: its save script (if any), then its files."""
    snapshot = snapshots.create_snapshot(
        session=session,
        settings=settings,
        actor=actor,
        instance_id=instance_id,
        name=body.name if body else None,
    )
    return SnapshotRead.model_validate(snapshot)


@router.get("/instances/{instance_id}/snapshots", response_model=list[SnapshotRead])
def list_instance_snapshots(
    instance_id: int, session: SessionDep, actor: CurrentActor
) -> list[SnapshotRead]:
    """An instance's snapshots, newest first."""
    found = snapshots.list_snapshots(session=session, actor=actor, instance_id=instance_id)
    return [SnapshotRead.model_validate(s) for s in found]


@router.patch("/instances/{instance_id}", response_model=InstanceRead)
def update_instance(
    instance_id: int,
    body: InstanceUpdate,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> InstanceRead:
    """Periodic snapshots while a phase runs."""
    instance = snapshots.set_auto_snapshots(
        session=session,
        actor=actor,
        instance_id=instance_id,
        minutes=body.auto_snapshot_minutes,
        keep=body.auto_snapshot_keep,
    )
    return instance_read(settings, instance)


@router.get("/snapshots", response_model=list[SnapshotRead])
def list_snapshots(session: SessionDep, actor: CurrentActor) -> list[SnapshotRead]:
    """Your snapshots, newest first."""
    return [
        SnapshotRead.model_validate(s)
        for s in snapshots.list_snapshots(session=session, actor=actor)
    ]


@router.post("/snapshots/upload", response_model=SnapshotRead, status_code=201)
async def upload_snapshot(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    name: Annotated[SnapshotName | None, Query()] = None,
    checksum: Annotated[str | None, Header(alias="X-Checksum-Sha256")] = None,
    content_length: Annotated[int | None, Header(ge=0)] = None,
) -> SnapshotRead:
    """A snapshot file from elsewhere (the raw body), verified before it is listed; refused
    before it is stored when it would pass your storage quota."""
    snapshot = await snapshots.upload_snapshot(
        session=session,
        settings=settings,
        actor=actor,
        body=request.stream(),
        name=name,
        expected_sha256=checksum,
        size_hint=content_length,
    )
    return SnapshotRead.model_validate(snapshot)


@router.get("/snapshots/{snapshot_id}", response_model=SnapshotRead)
def read_snapshot(snapshot_id: int, session: SessionDep, actor: CurrentActor) -> SnapshotRead:
    """A snapshot with what it holds (DT, values, job history)."""
    return SnapshotRead.model_validate(
        snapshots.get_snapshot(session=session, actor=actor, snapshot_id=snapshot_id)
    )


@router.get("/snapshots/{snapshot_id}/download", response_class=FileResponse)
def download_snapshot(
    snapshot_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> FileResponse:
    """The snapshot file (tar + zstd), with its sha256 in ``X-Checksum-Sha256``."""
    path = snapshots.download_path(
        session=session, settings=settings, actor=actor, snapshot_id=snapshot_id
    )
    snapshot = snapshots.get_snapshot(session=session, actor=actor, snapshot_id=snapshot_id)
    return FileResponse(
        path,
        media_type="application/zstd",
        filename=f"snapshot-{snapshot.id}.tar.zst",
        headers={"X-Checksum-Sha256": snapshot.sha256 or ""},
    )


@router.delete("/snapshots/{snapshot_id}", status_code=204)
def delete_snapshot(
    snapshot_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> None:
    """Delete a snapshot and its file."""
    snapshots.delete_snapshot(
        session=session, settings=settings, actor=actor, snapshot_id=snapshot_id
    )


@router.post("/snapshots/{snapshot_id}/respawn", response_model=InstanceRead, status_code=201)
def respawn(
    snapshot_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    body: Respawn | None = None,
) -> InstanceRead:
    """A new instance from a snapshot; its restore (or execute) phase is queued."""
    instance = snapshots.respawn(
        session=session,
        settings=settings,
        actor=actor,
        snapshot_id=snapshot_id,
        name=body.name if body else None,
        executor=body.executor if body else None,
    )
    return instance_read(settings, instance)
