"""Request and response models of the lifecycle manager."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dtaas.lifecycle.models import InstanceState, JobState, SnapshotState

PhaseName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class InstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    twin_path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    configuration_id: int | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None


class PhaseRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase: PhaseName


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    instance_id: int
    phase: str
    state: JobState
    executor: str
    exit_code: int | None
    reason: str | None
    cpu_seconds: float | None
    max_rss_bytes: int | None
    wall_seconds: float | None
    queued_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    provenance: dict[str, Any]
    queue_position: int | None = None


class InstanceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    twin_path: str
    name: str
    state: InstanceState
    values: dict[str, Any]
    configuration_name: str | None
    content_hash: str
    executor: str
    created_at: datetime
    updated_at: datetime
    auto_snapshot_minutes: int | None = None
    auto_snapshot_keep: int = 3
    phases: list[str] = Field(default_factory=list)


class InstanceDetail(InstanceRead):
    jobs: list[JobRead]


class InstanceUpdate(BaseModel):
    """Periodic snapshots of an instance while a phase runs (null minutes: none)."""

    model_config = ConfigDict(extra="forbid")

    auto_snapshot_minutes: Annotated[int, Field(ge=1, le=7 * 24 * 60)] | None
    auto_snapshot_keep: Annotated[int, Field(ge=1, le=100)] = 3


SnapshotName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)
]


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: SnapshotName | None = None


class SnapshotRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    instance_id: int | None
    twin_path: str
    name: str
    state: SnapshotState
    reason: str | None
    save_job_id: int | None
    auto: bool
    uploaded: bool
    size_bytes: int | None
    sha256: str | None
    created_at: datetime
    completed_at: datetime | None
    details: dict[str, Any]


class Respawn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    executor: Literal["local", "ray"] | None = None
