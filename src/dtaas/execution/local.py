"""The local executor: each job a sandboxed process tree on this machine.

A job runs under the shim (``dtaas.execution.shim``) in its own session, so it survives a
platform restart; the handle keeps the shim's pid and start time (to tell it from a
reused pid) and the status file the shim writes when the job ends. The handle is also
written to the job's folder, so ``find`` re-attaches a job whose handle the platform
never got to persist.

Where bubblewrap is available the job sees a read-only system, its instance's working
copy, the owner's library at ``/workspace`` with ``common/`` at ``/workspace/common``,
a private ``/tmp`` and nothing else of the machine: no other library, no database, no
secrets, no other process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from dtaas.execution.base import EndReason, Executor, JobOutcome, JobSpec

log = logging.getLogger(__name__)

# System paths a job may read; /etc only in part, so no shadow file or host keys.
_SYSTEM_READ_ONLY = ("/usr", "/opt")
_ETC_FILES = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ssl",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/mime.types",
    "/etc/java-17-openjdk",
    "/etc/python3",
    "/etc/python3.11",
)
_MERGED_USR_LINKS = {
    "/bin": "usr/bin",
    "/sbin": "usr/sbin",
    "/lib": "usr/lib",
    "/lib64": "usr/lib64",
}


CPU_HARD_LIMIT_MARGIN = 5
_REFUSE = Path(__file__).with_name("sandbox") / "refuse"
_SANDBOX_BIN = "/run/dtaas/bin"
_REFUSED_COMMANDS = ("sudo", "apt-get", "apt")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# The shims this process started, by pid, until reaped. Kept for the process, not per
# executor: a shim outlives an executor object (tests, a re-created executor), and a
# dropped Popen of a running child is a zombie and a ResourceWarning.
_SHIMS: dict[int, subprocess.Popen[bytes]] = {}


def bubblewrap_path() -> str | None:
    """The bwrap binary if this machine can run it."""
    return shutil.which("bwrap")


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _reap_ended_shims() -> None:
    for pid, shim in list(_SHIMS.items()):
        if shim.poll() is not None:
            del _SHIMS[pid]


def _stop_orphaned_session(job_file: Path) -> None:
    """SIGKILL the session of a job whose shim died without a status.

    In the sandbox bwrap's --die-with-parent ends the job; without one, the job's
    session (the shim started its main process with a new one) is all that is left.
    """
    try:
        job = json.loads(job_file.read_text())
        session = int(job["session"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    leader_started = _start_time(session)
    if leader_started is not None and leader_started != job.get("start_time"):
        return  # the pid is another process's now, so the session is not the job's
    for process in psutil.process_iter():
        try:
            if os.getsid(process.pid) == session:
                process.kill()
        except (OSError, psutil.Error):
            continue
    log.warning("job session killed after its shim died session=%s", session)


class LocalExecutor(Executor):
    """Runs jobs as sandboxed process trees on this machine."""

    name = "local"

    def __init__(self, *, work_dir: Path, sandbox: str = "auto", grace_seconds: float = 5) -> None:
        """``sandbox``: "bwrap" (required), "none", or "auto" (bwrap when available)."""
        self.work_dir = work_dir
        self.grace_seconds = grace_seconds
        self.bwrap = bubblewrap_path() if sandbox in ("auto", "bwrap") else None
        if sandbox == "bwrap" and self.bwrap is None:
            raise RuntimeError("DTAAS_SANDBOX=bwrap but bubblewrap (bwrap) is not installed")

    def _sandboxed(self, spec: JobSpec) -> list[str]:
        if self.bwrap is None:
            return spec.argv
        argv = [
            self.bwrap,
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--cap-drop",
            "ALL",
            "--hostname",
            "dtaas-job",
        ]
        for path in _SYSTEM_READ_ONLY:
            argv += ["--ro-bind-try", path, path]
        for link, target in _MERGED_USR_LINKS.items():
            argv += ["--symlink", target, link]
        for path in _ETC_FILES:
            argv += ["--ro-bind-try", path, path]
        # A private, empty /tmp per job (inside the sandbox, not the host's).
        argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108
        for host, inside, writable in spec.mounts:
            argv += ["--bind" if writable else "--ro-bind", str(host), inside]
        argv += ["--chdir", spec.inside_cwd or str(spec.cwd)]
        # sudo and apt cannot work without root on a read-only system: stand-ins say so.
        refuse = self._refuse_script()
        for name in _REFUSED_COMMANDS:
            argv += ["--ro-bind", str(refuse), f"{_SANDBOX_BIN}/{name}"]
        # The job's own environment only: bwrap would pass on ours otherwise.
        argv += ["--clearenv"]
        env = {**spec.env, "PATH": f"{_SANDBOX_BIN}:{spec.env.get('PATH', _DEFAULT_PATH)}"}
        for key, value in env.items():
            argv += ["--setenv", key, value]
        return [*argv, "--", *spec.argv]

    def _refuse_script(self) -> Path:
        # Copied with its exec bit set: installed package data may have lost it.
        path = self.work_dir / "refuse"
        if not path.is_file():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(_REFUSE.read_text())
            tmp.chmod(0o755)
            tmp.replace(path)
        return path

    def _prlimits(self, spec: JobSpec) -> list[str]:
        limits = spec.limits
        flags = []
        if limits.cpu_seconds is not None:
            # SIGXCPU at the soft limit (reported as cpu_time); SIGKILL at the hard one
            # for a job that ignores it.
            soft = limits.cpu_seconds
            flags.append(f"--cpu={soft}:{soft + CPU_HARD_LIMIT_MARGIN}")
        if limits.file_size_bytes is not None:
            flags.append(f"--fsize={limits.file_size_bytes}")
        prlimit = shutil.which("prlimit")
        if not flags or prlimit is None:
            return []
        return [prlimit, *flags, "--"]

    def _job_dir(self, job_id: int) -> Path:
        return self.work_dir / f"job-{job_id}"

    def start(self, spec: JobSpec) -> dict[str, Any]:
        """Start the job under the shim; returns pid, start time and status file."""
        _reap_ended_shims()
        job_dir = self._job_dir(spec.job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        status = job_dir / "status.json"
        for stale in (status, job_dir / "job.json", job_dir / "handle.json"):
            stale.unlink(missing_ok=True)
        shim_spec = {
            "argv": [*self._prlimits(spec), *self._sandboxed(spec)],
            "cwd": str(spec.cwd),
            "env": spec.env,
            "stdout": str(spec.stdout),
            "stderr": str(spec.stderr),
            "status": str(status),
            "grace_seconds": self.grace_seconds,
            "sandboxed": self.bwrap is not None,
            "limits": {
                "wall_time_seconds": spec.limits.wall_time_seconds,
                "memory_bytes": spec.limits.memory_bytes,
                "processes": spec.limits.processes,
                "cpu_seconds": spec.limits.cpu_seconds,
                "file_size_bytes": spec.limits.file_size_bytes,
            },
        }
        spec_file = job_dir / "spec.json"
        spec_file.write_text(json.dumps(shim_spec))
        # The shim inherits SIGTERM blocked and unblocks it once its handler is in place,
        # so a stop sent right after start is a cancel, not a shim killed before its status.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            with (job_dir / "shim.log").open("ab") as shim_log:
                shim = subprocess.Popen(  # noqa: S603  # our own interpreter and module
                    [sys.executable, "-m", "dtaas.execution.shim", str(spec_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=shim_log,
                    stderr=shim_log,
                    start_new_session=True,
                    close_fds=True,
                )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        _SHIMS[shim.pid] = shim
        log.info("job started job_id=%s pid=%s sandbox=%s", spec.job_id, shim.pid, bool(self.bwrap))
        handle = {
            "pid": shim.pid,
            "start_time": _start_time(shim.pid),
            "status": str(status),
            "sandbox": "bwrap" if self.bwrap else "none",
        }
        (job_dir / "handle.json").write_text(json.dumps(handle))
        return handle

    def find(self, job_id: int) -> dict[str, Any] | None:
        """The handle ``start`` wrote for the job; None if it never got that far."""
        try:
            found: dict[str, Any] = json.loads((self._job_dir(job_id) / "handle.json").read_text())
        except (OSError, ValueError):
            return None
        return found

    def _alive(self, handle: dict[str, Any]) -> bool:
        pid = int(handle["pid"])
        started = _start_time(pid)
        if started is None or started != handle.get("start_time"):
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def poll(self, handle: dict[str, Any]) -> JobOutcome | None:
        """None while the shim runs; the outcome from its status file after."""
        status = Path(handle["status"])
        if status.is_file():
            data = json.loads(status.read_text())
            self._reap(handle)
            return JobOutcome(
                exit_code=data["exit_code"],
                signal=data["signal"],
                reason=EndReason(data["reason"]),
                cpu_seconds=data["cpu_seconds"],
                max_rss_bytes=data["max_rss_bytes"],
                wall_seconds=data["wall_seconds"],
            )
        if self._alive(handle):
            return None
        self._reap(handle)
        _stop_orphaned_session(Path(handle["status"]).with_name("job.json"))
        return JobOutcome(
            exit_code=None,
            signal=None,
            reason=EndReason.LOST,
            cpu_seconds=None,
            max_rss_bytes=None,
            wall_seconds=None,
        )

    def _reap(self, handle: dict[str, Any]) -> None:
        # The shim is our child only if this process started it; reap it then.
        child = _SHIMS.get(int(handle["pid"]))
        if child is not None and child.poll() is not None:
            del _SHIMS[child.pid]

    def stop(self, handle: dict[str, Any], *, grace: float) -> None:
        """SIGTERM to the shim, which stops the job's tree (SIGKILL after its grace)."""
        if self._alive(handle):
            try:
                os.kill(int(handle["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                return
            log.info("job stop requested pid=%s grace=%s", handle["pid"], grace)
