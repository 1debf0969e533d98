"""Request and response models of the lifecycle manager."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dtaas.lifecycle.models import InstanceState, JobState

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
    phases: list[str] = Field(default_factory=list)


class InstanceDetail(InstanceRead):
    jobs: list[JobRead]
