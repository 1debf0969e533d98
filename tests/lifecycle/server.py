"""A real ``dtaas serve`` process on loopback, for tests that kill and restart the platform.

Unlike ``tests/live.py`` (a server thread inside the test process), this is the command
users run, in a session of its own, so the test can SIGKILL it like a crashed machine
would and start it again on the same data directory.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.execution.processes import wait_until

DTAAS = Path(sys.executable).parent / "dtaas"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# Proxies from the environment would send loopback requests elsewhere.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
_PASSWORD_LINE = re.compile(r"^  (\w+)\s+(\S+)\s*$")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(data_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DTAAS_") and name.upper() not in PROXY_VARIABLES
    }
    env.update({"DTAAS_DATA_DIR": str(data_dir), "DTAAS_LOG_LEVEL": "WARNING", **settings})
    return env


@dataclass
class ServerProcess:
    """``dtaas serve`` on a data directory; start, kill and restart it."""

    data_dir: Path
    settings: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        """Everything the latest start printed."""
        return self._output_file().read_text(errors="replace")

    def _output_file(self) -> Path:
        return self.data_dir.parent / f"server-{self.starts}.out"

    def start(self) -> None:
        """Start the server and wait until it answers /healthz."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self._output_file().open("wb") as out:
            self.process = subprocess.Popen(
                [str(DTAAS), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_environment(self.data_dir, self.settings),
                cwd=self.data_dir,  # no ./dtaas.toml of the repository
                start_new_session=True,
            )
        wait_until(self._healthy, timeout=START_TIMEOUT, message="the server answering")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited during startup:\n{self.output()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2, trust_env=False).is_success
        except httpx.TransportError:
            return False

    def demo_passwords(self) -> dict[str, str]:
        """The demo users' passwords the first start printed (``  alice    <password>``)."""
        found = {}
        for line in self.output().splitlines():
            if line.startswith("dtaas is serving"):
                break
            match = _PASSWORD_LINE.match(line)
            if match:
                found[match.group(1)] = match.group(2)
        return found

    def kill(self) -> None:
        """SIGKILL the server, as a crash would end it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM and wait for a clean shutdown (SIGKILL if it does not come)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
            trust_env=False,
        )

    def token_for(self, username: str, password: str) -> str:
        response = httpx.post(
            f"{self.url}/api/v1/auth/token",
            json={"username": username, "password": password, "token_name": "test"},
            timeout=30,
            trust_env=False,
        )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


@contextmanager
def server_process(data_dir: Path, **settings: str) -> Iterator[ServerProcess]:
    """A started server; stopped (killed if need be) when the block ends."""
    server = ServerProcess(data_dir=data_dir, settings=settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()
