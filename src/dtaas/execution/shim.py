"""The job shim: runs one job, enforces its limits and writes how it ended.

The local executor starts ``python -m dtaas.execution.shim SPEC`` in a session of its
own. The shim outlives a platform restart (it is nobody's child that matters), so the
platform can re-attach by reading the status file the shim writes at the end:

    {"exit_code": 0, "signal": null, "reason": "exited", "cpu_seconds": 1.2,
     "max_rss_bytes": 12345, "wall_seconds": 3.4, "started_at": ..., "ended_at": ...}

Limits: wall time, resident memory of the whole process tree and its number of
processes are watched here (rlimits cannot see a tree, and root ignores RLIMIT_NPROC);
CPU time and file size are rlimits set on the job (``prlimit``). On SIGTERM (a cancel)
the shim stops the tree: SIGTERM to every process, then SIGKILL after the grace period.

The executor starts the shim with SIGTERM blocked, so a cancel sent before the handler
below is installed waits instead of killing the shim without a status. The job's session
id goes to ``job.json`` beside the status file: were the shim itself killed, the executor
stops that session, so an unsandboxed job never runs on unwatched.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

# The tree is sampled often at first (short jobs, fast limit hits) and then once a
# second: hundreds of long jobs must not keep the machine busy just being watched.
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 1.0
PR_SET_CHILD_SUBREAPER = 36
# Shells report a child killed by signal N as exit status 128+N, and so does bubblewrap
# for the job it runs as the sandbox's init.
SIGNAL_EXIT_BASE = 128


def _become_subreaper() -> None:
    """Orphans of the job (double forks, ``nohup ... &``) become our children, so the
    tree we watch and stop is the whole job, not just what still has its parent."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` from /proc/PID/task/*/children: reading the tree this
    way costs as much as the tree, where a scan of every process on the machine (as
    ``psutil.children`` does) makes hundreds of watched jobs load the machine."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _has_children_files() -> bool:
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


_FAST_TREE = _has_children_files()


def _tree(root: int) -> list[psutil.Process]:
    """Every process below ``root``, walking the children files."""
    found: list[psutil.Process] = []
    pending = _children(root)
    while pending:
        pid = pending.pop()
        try:
            found.append(psutil.Process(pid))
        except psutil.Error:
            continue
        pending += _children(pid)
    return found


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _tree_rss(processes: list[psutil.Process]) -> int:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


def _signal_tree(processes: list[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.Error:
            continue


def _descendants(main_pid: int) -> list[psutil.Process]:
    """Every live process below the shim: as a subreaper it adopts the job's orphans.

    Adopted orphans that ended are reaped here; the main process never is, because
    ``Popen`` must read its exit status.
    """
    if _FAST_TREE:
        children = _tree(os.getpid())
    else:
        try:
            children = psutil.Process().children(recursive=True)
        except psutil.Error:
            return []
    alive = []
    for child in children:
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                if child.pid != main_pid:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(child.pid, os.WNOHANG)
                continue
        except psutil.Error:
            continue
        alive.append(child)
    return alive


def _stop_all(main_pid: int, grace: float) -> int:
    """SIGTERM to every process of the job, SIGKILL to what is left after ``grace``."""
    processes = _descendants(main_pid)
    if not processes:
        return 0
    _signal_tree(processes, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace)
    _signal_tree(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace)
    return len(processes)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _death(returncode: int, *, sandboxed: bool) -> tuple[int | None, int | None]:
    """(exit status, signal) of the job's main process."""
    if returncode < 0:
        return None, -returncode
    if sandboxed and SIGNAL_EXIT_BASE < returncode <= SIGNAL_EXIT_BASE + signal.SIGRTMAX:
        return None, returncode - SIGNAL_EXIT_BASE
    return returncode, None


def _limit_reason(
    exit_code: int | None, signum: int | None, cpu_seconds: float, limits: dict[str, Any]
) -> str | None:
    """The rlimit that ended the job, if one did: the kernel signals the process that hit
    it, and a shell running that process exits with 128+N."""
    ended_by = signum if signum is not None else (exit_code or 0) - SIGNAL_EXIT_BASE
    cpu_limit = limits.get("cpu_seconds")
    # SIGKILL too: the kernel sends it at the hard limit, a few seconds past the soft one.
    if cpu_limit is not None and (
        ended_by == signal.SIGXCPU or (ended_by == signal.SIGKILL and cpu_seconds >= cpu_limit)
    ):
        return "cpu_time"
    if limits.get("file_size_bytes") is not None and ended_by == signal.SIGXFSZ:
        return "file_size"
    return None


def _cancelled_before_start(spec: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    status = {
        "exit_code": None,
        "signal": None,
        "reason": "cancelled",
        "cpu_seconds": 0.0,
        "max_rss_bytes": 0,
        "wall_seconds": 0.0,
        "started_at": now,
        "ended_at": now,
    }
    _write_json(Path(spec["status"]), status)
    return status


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the job described by ``spec`` to its end; returns the status written."""
    limits = spec.get("limits", {})
    wall_time = limits.get("wall_time_seconds")
    memory = limits.get("memory_bytes")
    processes_max = limits.get("processes")
    grace = float(spec.get("grace_seconds", 5))
    sandboxed = bool(spec.get("sandboxed"))
    cancelled = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal cancelled
        cancelled = True

    signal.signal(signal.SIGTERM, on_term)
    # A cancel sent while SIGTERM was blocked is delivered here, to the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    if cancelled:
        return _cancelled_before_start(spec)
    _become_subreaper()
    started = time.time()
    job_file = Path(spec["status"]).with_name("job.json")

    def record_session() -> None:
        # In the child, after setsid and before exec: the job's session is on disk before
        # the job runs, so a shim killed at any moment after this leaves it findable.
        # (Written by the shim after Popen returned, a job could print and the shim die
        # first: the job then ran on unwatched.)
        pid = os.getpid()
        _write_json(job_file, {"session": pid, "start_time": _start_time(pid)})

    with Path(spec["stdout"]).open("ab") as out, Path(spec["stderr"]).open("ab") as err:
        child = subprocess.Popen(  # noqa: S603  # argv built by the platform, no shell
            spec["argv"],
            cwd=spec["cwd"],
            env=spec["env"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=record_session,  # the shim runs no threads
        )
    reason = "exited"
    peak = 0
    interval = FIRST_POLL_SECONDS
    while child.poll() is None:
        tree = _descendants(child.pid)
        rss = _tree_rss(tree)
        peak = max(peak, rss)
        if cancelled:
            reason = "cancelled"
        elif wall_time is not None and time.time() - started > wall_time:
            reason = "wall_time"
        elif memory is not None and rss > memory:
            reason = "memory"
        elif processes_max is not None and len(tree) > processes_max:
            reason = "processes"
        if reason != "exited":
            _stop_all(child.pid, grace)
            break
        try:
            child.wait(timeout=interval)  # returns at once when the job ends
        except subprocess.TimeoutExpired:
            interval = min(MAX_POLL_SECONDS, interval * 1.5)
    returncode = child.wait()
    if sandboxed:
        # bwrap's init ends everything in the sandbox when the job ends, a moment after
        # bwrap itself may have returned: wait for that, it is not a leftover.
        psutil.wait_procs(_descendants(child.pid), timeout=grace)
    # The job is its main process: background processes it left behind are stopped,
    # so no job outlives its record.
    left = _stop_all(child.pid, grace)
    if left:
        with Path(spec["stderr"]).open("ab") as err:
            err.write(
                f"[dtaas] stopped {left} background process(es) the job left running\n".encode()
            )
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    ended = time.time()
    exit_code, signum = _death(returncode, sandboxed=sandboxed)
    cpu_seconds = round(usage.ru_utime + usage.ru_stime, 3)
    if reason == "exited":
        reason = _limit_reason(exit_code, signum, cpu_seconds, limits) or reason
    status = {
        "exit_code": exit_code,
        "signal": signum,
        "reason": reason,
        "cpu_seconds": cpu_seconds,
        "max_rss_bytes": max(peak, usage.ru_maxrss * 1024),
        "wall_seconds": round(ended - started, 3),
        "started_at": started,
        "ended_at": ended,
    }
    _write_json(Path(spec["status"]), status)
    return status


def main() -> int:
    """Entry point: ``python -m dtaas.execution.shim SPEC_FILE``."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    run(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
