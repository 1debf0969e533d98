"""Acceptance: a 200 MB upload completes while the server's memory grows by less than 50 MB.

A real ``dtaas serve`` process (SQLite, demo users) on a free loopback port receives a
multipart body that is generated chunk by chunk, so neither side ever holds it whole.
The server's peak resident set (``VmHWM``) is read from ``/proc`` before and after.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

MIB = 1024 * 1024
UPLOAD_MIB = 200
MAX_GROWTH_BYTES = 50 * MIB
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PASSWORD_LINE = re.compile(r"^\s+alice\s+(\S+)\s*$")
BOUNDARY = "dtaas-memory-test-boundary"


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    data_dir: Path
    alice_password: str


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _is_healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200
    except httpx.TransportError:
        return False


def _server_environment(data_dir: Path) -> dict[str, str]:
    # The machine's own dtaas settings and proxies must not leak into the server.
    keep = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DTAAS_")
        and name.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    }
    return {
        **keep,
        "DTAAS_DATA_DIR": str(data_dir),
        "DTAAS_DEMO": "true",
        "DTAAS_HOST": "127.0.0.1",
        "DTAAS_LOG_LEVEL": "WARNING",
    }


def _read_lines(stream: Iterator[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """A `dtaas serve` process with the demo users; its process group is killed after."""
    port = _free_port()
    data_dir = tmp_path / "data"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    dtaas = Path(sys.executable).parent / "dtaas"
    with (tmp_path / "server.err").open("w") as errors:
        process = subprocess.Popen(
            [str(dtaas), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=_server_environment(data_dir),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            start_new_session=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        password = _alice_password(lines, process)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _is_healthy(url), timeout=START_TIMEOUT, what="/healthz")
        yield Server(url=url, pid=process.pid, data_dir=data_dir, alice_password=password)
    finally:
        _stop(process)
        reader.join(timeout=STOP_TIMEOUT)
        process.stdout.close()


def _alice_password(lines: queue.Queue[str], process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        match = PASSWORD_LINE.match(line)
        if match:
            return match.group(1)
    pytest.fail(f"no password for alice in the server's output (exit {process.poll()}): {seen}")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None, status
    return int(match.group(1)) * 1024


class MultipartStream:
    """A multipart body of one generated file, produced chunk by chunk and hashed on the way."""

    def __init__(self, *, filename: str, size_mib: int) -> None:
        self.filename = filename
        self.size_mib = size_mib
        self.sent = 0
        self.digest = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        yield (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{self.filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        for _ in range(self.size_mib):
            chunk = os.urandom(MIB)
            self.digest.update(chunk)
            self.sent += len(chunk)
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def test_200_mb_upload_grows_server_memory_by_less_than_50_mb(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60.0, trust_env=False) as client:
        login = {"username": "alice", "password": server.alice_password}
        created = client.post("/api/v1/auth/token", json=login)
        assert created.status_code == 201, created.text
        auth = {"Authorization": f"Bearer {created.json()['token']}"}
        # Warm up: import and exercise every code path of an upload once.
        warm = client.post(
            "/api/v1/library/upload",
            params={"path": "alice/data"},
            files=[("files", ("warm.bin", os.urandom(MIB)))],
            headers=auth,
        )
        assert warm.status_code == 201, warm.text
        before = peak_rss_bytes(server.pid)

        body = MultipartStream(filename="big.bin", size_mib=UPLOAD_MIB)
        response = client.post(
            "/api/v1/library/upload",
            params={"path": "alice/data"},
            content=iter(body),
            headers={**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=110.0,
        )
        after = peak_rss_bytes(server.pid)

    assert response.status_code == 201, response.text
    assert response.json()["files"][0]["size"] == UPLOAD_MIB * MIB
    growth = after - before
    assert growth < MAX_GROWTH_BYTES, f"peak RSS grew by {growth / MIB:.1f} MiB"
    stored = server.data_dir / "files" / "alice" / "data" / "big.bin"
    assert body.sent == stored.stat().st_size == UPLOAD_MIB * MIB
    assert _sha256_of(stored) == body.digest.hexdigest()
