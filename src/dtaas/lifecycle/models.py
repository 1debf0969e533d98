"""Tables of the lifecycle manager: instances of DTs and the jobs that ran their phases."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dtaas.db import Base, UtcDateTime, utcnow


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


class InstanceState(StrEnum):
    """Where an instance is in its life."""

    READY = "ready"  # working copy made; phases may run
    BUSY = "busy"  # a phase is queued or running
    TERMINATING = "terminating"  # stopping a phase and running terminate
    TERMINATED = "terminated"  # terminate ran; only clean is left
    CLEANING = "cleaning"  # the clean script runs; then the working copy goes
    CLEANED = "cleaned"  # working copy removed; nothing is left to do


class JobState(StrEnum):
    """Where a job is; the last three are terminal."""

    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Instance(Base):
    """One deployment of a DT: its own working copy, parameters, state and history."""

    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    # Names the owner's library for the job's mounts; usernames never change.
    owner_name: Mapped[str] = mapped_column(String(32))
    twin_path: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[InstanceState] = mapped_column(
        SqlEnum(InstanceState, native_enum=False, length=16, values_callable=_values)
    )
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    configuration_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    executor: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
    # Set once terminate has finished: a clean that fails or is cancelled goes back to
    # terminated (not ready), so a terminated DT never runs again.
    terminated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Periodic snapshots while a phase runs: every N minutes, keeping the last K.
    auto_snapshot_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    auto_snapshot_keep: Mapped[int] = mapped_column(Integer, default=3)

    jobs: Mapped[list[Job]] = relationship(
        back_populates="instance", order_by="Job.id", cascade="all, delete-orphan"
    )


class Job(Base):
    """One run of one lifecycle phase of an instance, persisted before it starts."""

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    phase: Mapped[str] = mapped_column(String(32))
    state: Mapped[JobState] = mapped_column(
        SqlEnum(JobState, native_enum=False, length=16, values_callable=_values)
    )
    executor: Mapped[str] = mapped_column(String(16))
    handle: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    cpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_rss_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    queued_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    instance: Mapped[Instance] = relationship(back_populates="jobs")


class SnapshotState(StrEnum):
    """Where a snapshot is; only ready ones can be downloaded or re-spawned."""

    SAVING = "saving"  # the DT's save script writes its state
    ARCHIVING = "archiving"  # the working copy and state are being packed
    READY = "ready"
    FAILED = "failed"


class Snapshot(Base):
    """A saved instance: its working copy and the state its save script wrote, packed
    as ``<data>/snapshots/<id>.tar.zst`` once complete (never listed half-written)."""

    __tablename__ = "snapshot"
    __table_args__ = (Index("ix_snapshot_state", "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    # The instance may be deleted later; its snapshots stay.
    instance_id: Mapped[int | None] = mapped_column(
        ForeignKey("instance.id", ondelete="SET NULL"), nullable=True
    )
    twin_path: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[SnapshotState] = mapped_column(
        SqlEnum(SnapshotState, native_enum=False, length=16, values_callable=_values)
    )
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    save_job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    auto: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
