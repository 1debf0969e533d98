"""The Executor contract the lifecycle manager drives, whatever runs the jobs.

Modelled on JupyterHub's Spawner. A backend implements:

- ``start(spec) -> handle``: start one job; returns a JSON-able dict (its state) that the
  lifecycle manager persists before anything else, so a restarted platform can
  re-attach with it.
- ``poll(handle) -> JobOutcome | None``: None while the job runs, its outcome after.
  Works with a handle from before a restart.
- ``stop(handle, grace)``: ask the job to end (SIGTERM semantics), killing it after
  ``grace`` seconds; returns at once, ``poll`` reports the end.
- ``find(job_id) -> handle | None``: the handle of a job this backend started, found
  without the database: the platform may crash between ``start`` and persisting the
  handle, and must not then record as failed a job that runs on.
- ``name``: where jobs run, shown to users ("local", "ray").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar


class EndReason(StrEnum):
    """Why a job ended."""

    EXITED = "exited"
    CANCELLED = "cancelled"
    WALL_TIME = "wall_time"
    MEMORY = "memory"
    PROCESSES = "processes"
    CPU_TIME = "cpu_time"
    FILE_SIZE = "file_size"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one job may use; None means no limit."""

    wall_time_seconds: float | None = None
    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    processes: int | None = None
    file_size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything an executor needs to run one lifecycle phase of an instance."""

    job_id: int
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    stdout: Path
    stderr: Path
    limits: Limits = field(default_factory=Limits)
    # Sandbox mounts: host path -> path inside, writable or not.
    mounts: list[tuple[Path, str, bool]] = field(default_factory=list)
    inside_cwd: str | None = None


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job ended, with its measured usage."""

    exit_code: int | None
    signal: int | None
    reason: EndReason
    cpu_seconds: float | None
    max_rss_bytes: int | None
    wall_seconds: float | None

    @property
    def succeeded(self) -> bool:
        return self.reason == EndReason.EXITED and self.exit_code == 0


class Executor(ABC):
    """Runs jobs somewhere; see the module docstring for the contract."""

    name: ClassVar[str]

    @abstractmethod
    def start(self, spec: JobSpec) -> dict[str, Any]:
        """Start the job; returns its persistable handle."""

    @abstractmethod
    def poll(self, handle: dict[str, Any]) -> JobOutcome | None:
        """None while the job runs; its outcome once it ended."""

    @abstractmethod
    def stop(self, handle: dict[str, Any], *, grace: float) -> None:
        """Ask the job to end; it is killed after ``grace`` seconds."""

    @abstractmethod
    def find(self, job_id: int) -> dict[str, Any] | None:
        """The handle of job ``job_id`` if this backend started it; None if it never did."""
