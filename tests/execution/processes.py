"""Waiting on conditions with a deadline, and finding the processes a test's jobs left.

A test's jobs are recognised by a path only that test uses (its temporary root): the
shim names its spec file under it, bubblewrap names its mounts under it, and unsandboxed
jobs carry it in their environment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")

POLL_SECONDS = 0.05


def wait_until(
    condition: Callable[[], T | None], *, timeout: float = 30.0, message: str = "the condition"
) -> T:
    """Evaluate ``condition`` until it is truthy and return its value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} was not met within {timeout:g} s")
        time.sleep(POLL_SECONDS)  # the poll interval of a deadline-bounded wait


def _names(process: psutil.Process, mark: str) -> bool:
    def named(text: str) -> bool:
        # ".../test_x1" must not match ".../test_x10": a path below root, or root itself.
        return text == mark or f"{mark}/" in text

    if any(named(part) for part in process.cmdline()):
        return True
    return any(named(value) for value in process.environ().values())


def processes_of(root: Path) -> list[psutil.Process]:
    """Live processes (zombies aside) whose command line or environment names ``root``."""
    mark = str(root).rstrip("/")
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.status() != psutil.STATUS_ZOMBIE and _names(process, mark):
                found.append(process)
        except psutil.Error:
            continue  # it ended while we looked, or is not ours to read
    return found


def shims_of(root: Path) -> int:
    """How many job shims of ``root`` are alive."""
    count = 0
    for process in processes_of(root):
        try:
            count += "dtaas.execution.shim" in process.cmdline()
        except psutil.Error:
            continue
    return count


def sandboxes_of(root: Path) -> int:
    """How many jobs of ``root`` have a sandbox (a live bwrap process) under their shim.

    Unlike shims, which live on for a moment after writing the job's status, a job's
    sandbox is gone before its end is recorded. Counted per shim: as bwrap ends, its
    init can outlive it for a moment and is then the shim's child, beside bwrap's zombie.
    """
    count = 0
    for process in processes_of(root):
        try:
            if "dtaas.execution.shim" not in process.cmdline():
                continue
            count += any(
                child.name() == "bwrap" and child.status() != psutil.STATUS_ZOMBIE
                for child in process.children(recursive=True)
            )
        except psutil.Error:
            continue
    return count


def describe(processes: list[psutil.Process]) -> list[str]:
    """``pid: command line`` of each process still there, for a failure message."""
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid}: {' '.join(process.cmdline())[:200]}")
        except psutil.Error:
            continue
    return lines


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL every process and wait for it, so a failed test leaks nothing."""
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(processes, timeout=10)


def assert_no_processes_of(root: Path, *, timeout: float = 15.0) -> None:
    """Wait until no process of ``root`` is left; kill the rest and fail if some are."""
    deadline = time.monotonic() + timeout
    left = processes_of(root)
    while left and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)  # the poll interval of a deadline-bounded wait
        left = processes_of(root)
    if left:
        survivors = describe(left)
        kill_all(left)
        raise AssertionError(f"job processes survived the test: {survivors}")
