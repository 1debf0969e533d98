"""A throw-away dtaas site for the benchmarks: `dtaas serve` on a free loopback port, its
demo passwords, and a stop that ends its whole process group."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
_PASSWORD_LINE = re.compile(r"^  ([a-z][a-z0-9_-]*)\s+(\S+)\s*$")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def executable(name: str, *, hint: str = "run this with the project's .venv/bin/python") -> str:
    """A program of the project's venv (beside this Python), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed; {hint}")
    return found


def wait_until(
    condition: Callable[[], Any], *, timeout: float, what: str, poll: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)
    return value


class Server:
    """A data directory under ``root`` and the `dtaas serve` process running on it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, settings: dict[str, str]) -> dict[str, str]:
        """Start the demo site with ``DTAAS_*`` ``settings`` (none of ours leak in); returns
        the one-time demo passwords by user once /healthz answers."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("DTAAS_") and not name.upper().endswith("_PROXY")
        }
        environment |= {
            "DTAAS_DATA_DIR": str(self.data),
            "DTAAS_DEMO": "true",
            "DTAAS_LOG_LEVEL": "WARNING",
            **settings,
        }
        workdir = self.root / "cwd"
        workdir.mkdir()
        output = self.root / "server.out"
        with output.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603  # our own executable and arguments
                [executable("dtaas"), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=workdir,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped whole
            )

        def passwords() -> dict[str, str] | None:
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"the server stopped:\n{output.read_text()}")
            found = {
                match.group(1): match.group(2)
                for line in output.read_text(errors="replace").splitlines()
                if (match := _PASSWORD_LINE.match(line))
            }
            return found if {"admin", "alice", "bob"} <= found.keys() else None

        found: dict[str, str] = wait_until(
            passwords, timeout=START_TIMEOUT, what="the demo passwords"
        )
        wait_until(self.healthy, timeout=START_TIMEOUT, what="/healthz")
        return found

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0, trust_env=False).is_success
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after a grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)
