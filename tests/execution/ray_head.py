"""A real local Ray head for the tests: loopback only, token auth, its own process group.

Started as ARCHITECTURE.md says: ``ray start --head --block`` in the foreground of its own
process group, every port pinned to a free one on 127.0.0.1 (the defaults are fixed
numbers another head may hold), its own temporary directory. Ending it terminates that
head process, then kills what is left of its group and of its temporary directory;
``ray stop`` would end every Ray process on the machine.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from tests.execution.processes import kill_all, processes_of

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
NUM_CPUS = 2
# A job waiting for a node longer than this is failed by Ray itself (its start timeout).
START_TIMEOUT_SECONDS = 15
WORKER_PORTS = 200
START_DEADLINE_SECONDS = 90.0


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on loopback now (held together while chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind((LOOPBACK, 0))
            ports.append(sock.getsockname()[1])
        return ports


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port_range(size: int) -> int:
    """The first port of ``size`` consecutive free ones, below the ephemeral range."""
    for _ in range(100):
        first = random.randrange(15_000, 32_000 - size)  # not a secret
        if all(_is_free(port) for port in range(first, first + size)):
            return first
    raise RuntimeError(f"no {size} consecutive free ports on {LOOPBACK}")


@dataclass
class RayHead:
    """A running head: its jobs API address and token, and how to end it."""

    address: str
    token: str
    temp_dir: Path
    process: subprocess.Popen[bytes]
    num_cpus: int = NUM_CPUS

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def processes(self) -> list[psutil.Process]:
        """The head's processes: its tree, and any process naming its temp directory."""
        found = {process.pid: process for process in processes_of(self.temp_dir)}
        with suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            for process in [root, *root.children(recursive=True)]:
                found.setdefault(process.pid, process)
        return list(found.values())

    def is_ready(self) -> bool:
        """Whether the jobs API answers and the head's node is alive with its CPUs."""
        try:
            jobs = httpx.get(f"{self.address}/api/jobs/", headers=self.headers, timeout=5)
            nodes = httpx.get(f"{self.address}/api/v0/nodes", headers=self.headers, timeout=5)
        except httpx.HTTPError:
            return False
        if jobs.status_code != 200 or nodes.status_code != 200:
            return False
        alive = [
            node
            for node in nodes.json()["data"]["result"]["result"]
            if node["state"] == "ALIVE" and node["resources_total"].get("CPU") == self.num_cpus
        ]
        return len(alive) == 1

    def log_tail(self) -> str:
        log = self.temp_dir / "head.log"
        return log.read_text(errors="replace")[-3000:] if log.exists() else ""

    def stop(self) -> None:
        """End the head (it stops what it started), then whatever is left of its group."""
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log.warning("the Ray head did not end on SIGTERM; killing its process group")
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        # Workers run in process groups of their own; they name the temp directory.
        kill_all(processes_of(self.temp_dir))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _environment(token: str, metric_ports: list[int]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")
    }
    env.update(
        {
            # Otherwise Ray swaps 127.0.0.1 for the machine's routable address.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_JOB_START_TIMEOUT_SECONDS": str(START_TIMEOUT_SECONDS),
            # No 30 s drain on SIGTERM: there is nothing to hand over at the end.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "DASHBOARD_METRIC_PORT": str(metric_ports[0]),
            "AUTOSCALER_METRIC_PORT": str(metric_ports[1]),
        }
    )
    return env


def start_ray_head() -> RayHead:
    """Start a head and wait until it takes jobs; ends it if it never does."""
    # A short path: Ray's unix sockets live below it, and their paths are limited.
    temp_dir = Path(tempfile.mkdtemp(prefix="dtaas-ray-", dir="/tmp"))
    (gcs, dashboard, client, agent_listen, agent_grpc, runtime_env, metrics, node_manager,
     object_manager, dashboard_metrics, autoscaler_metrics) = free_ports(11)  # fmt: skip
    workers = free_port_range(WORKER_PORTS)
    ray = Path(sys.executable).parent / "ray"
    argv = [
        str(ray), "start", "--head", "--block", "--disable-usage-stats",
        f"--node-ip-address={LOOPBACK}", f"--port={gcs}",
        f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}",
        f"--metrics-export-port={metrics}",
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--min-worker-port={workers}", f"--max-worker-port={workers + WORKER_PORTS - 1}",
        f"--num-cpus={NUM_CPUS}", "--num-gpus=0",
        f"--object-store-memory={100 * 1024**2}",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    token = secrets.token_hex(16)
    with (temp_dir / "head.log").open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(token, [dashboard_metrics, autoscaler_metrics]),
            start_new_session=True,  # its own group, so stop() ends exactly this head
        )
    head = RayHead(
        address=f"http://{LOOPBACK}:{dashboard}", token=token, temp_dir=temp_dir, process=process
    )
    deadline = time.monotonic() + START_DEADLINE_SECONDS
    while not head.is_ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = head.log_tail()
            head.stop()
            raise RuntimeError(f"the Ray head did not start; its log ends:\n{tail}")
        time.sleep(0.2)  # the poll interval of a deadline-bounded wait
    return head
