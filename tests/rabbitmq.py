"""A private RabbitMQ node for the tests, with the management API: loopback only.

The machine's RabbitMQ (127.0.0.1:5672) runs without the management plugin, and tests must
not change it. This starts a node of its own from RabbitMQ's own start script (not the
``/usr/sbin`` wrapper, which would switch to the ``rabbitmq`` user and write to
``/var/log/rabbitmq``): a unique node name, every file (database, logs, config, enabled
plugins, Erlang cookie) in a temporary directory, and every port a free one on 127.0.0.1:
AMQP, management HTTP and Erlang distribution (bound to loopback too). It registers with
the machine's epmd on 127.0.0.1. It runs in its own process group; stopping it terminates
that group and checks that no process of this node is left. ``rabbitmqctl stop`` is never
used: aimed wrongly it would stop the machine's node.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psutil

from tests.execution.processes import kill_all, processes_of
from tests.execution.ray_head import LOOPBACK, free_ports

log = logging.getLogger(__name__)

# RabbitMQ's own start script; /usr/sbin/rabbitmq-server wraps it in `su rabbitmq`.
SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_DEADLINE_SECONDS = 90.0
STOP_DEADLINE_SECONDS = 30.0
ADMIN_USER = "dtaas-test-admin"

CONFIG = """\
listeners.tcp.1 = {host}:{amqp_port}
management.tcp.ip = {host}
management.tcp.port = {management_port}
default_user = {user}
default_pass = {password}
default_user_tags.administrator = true
# Statistics every half second, so tests see message counts soon (default 5 s).
collect_statistics_interval = 500
log.console = false
log.file.level = info
"""


@dataclass
class RabbitNode:
    """A running private node: its AMQP and management URLs, and how to end it."""

    name: str
    amqp_port: int
    management_port: int
    password: str
    base_dir: Path
    process: subprocess.Popen[bytes]
    started_in_seconds: float = 0.0

    @property
    def amqp_url(self) -> str:
        """The administrator's AMQP URL (default vhost)."""
        return f"amqp://{ADMIN_USER}:{quote(self.password)}@{LOOPBACK}:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        """The management API with the administrator's credentials, as the setting takes it."""
        return f"http://{ADMIN_USER}:{quote(self.password)}@{LOOPBACK}:{self.management_port}"

    def api(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One management API request as the administrator (``path`` below ``/api``)."""
        return httpx.request(
            method,
            f"http://{LOOPBACK}:{self.management_port}/api{path}",
            auth=(ADMIN_USER, self.password),
            timeout=10,
            **kwargs,  # type: ignore[arg-type]  # httpx's keyword arguments, passed through
        )

    def is_ready(self) -> bool:
        """Whether the management API answers (it starts after the AMQP listener)."""
        try:
            return self.api("GET", "/overview").status_code == 200
        except httpx.HTTPError:
            return False

    def processes(self) -> list[psutil.Process]:
        """The node's processes: its tree, and any process naming its directory."""
        found = {process.pid: process for process in processes_of(self.base_dir)}
        with suppress(psutil.Error):
            root = psutil.Process(self.process.pid)
            for process in [root, *root.children(recursive=True)]:
                found.setdefault(process.pid, process)
        return list(found.values())

    def log_tail(self) -> str:
        logs = [*sorted((self.base_dir / "log").glob("*.log")), self.base_dir / "console.log"]
        return "\n".join(path.read_text(errors="replace")[-2000:] for path in logs if path.exists())

    def stop(self) -> None:
        """Terminate the node's process group, then kill anything of it that is left.

        A node that ended on its own leaves its log beside its folder (``…-died.log``)."""
        if self.process.poll() is not None:
            died = self.base_dir.with_name(f"{self.base_dir.name}-died.log")
            died.write_text(f"exit status {self.process.returncode}\n{self.log_tail()}")
            log.warning("the RabbitMQ node %s had ended on its own; see %s", self.name, died)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)  # the script stops the VM cleanly
        try:
            self.process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("the RabbitMQ node %s did not end on SIGTERM; killing it", self.name)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        kill_all(self.processes())
        left = [process for process in self.processes() if process.is_running()]
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"processes of RabbitMQ node {self.name} are left: {left}")


def _environment(name: str, base_dir: Path, dist_port: int) -> dict[str, str]:
    # Nothing of the test's own environment: a test that names its folder there (e.g.
    # DTAAS_DATA_DIR) and then kills the processes naming it would kill the shared node.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    env.update(
        {
            "HOME": str(base_dir),  # the Erlang cookie is made here, not in /root
            "RABBITMQ_NODENAME": name,
            # Not /etc/rabbitmq/rabbitmq-env.conf, which names the machine's node.
            "RABBITMQ_CONF_ENV_FILE": str(base_dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base_dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base_dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base_dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base_dir / "log"),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_ADDRESS": LOOPBACK,
        }
    )
    return env


def start_rabbitmq_node() -> RabbitNode:
    """Start a private node and wait until its management API answers.

    Raises: RuntimeError with the end of the node's log if it does not start in time.
    """
    started = time.monotonic()
    base_dir = Path(tempfile.mkdtemp(prefix="dtaas-rabbitmq-", dir="/tmp"))
    amqp_port, management_port, dist_port = free_ports(3)
    password = os.urandom(12).hex()
    name = f"dtaas-test-{os.getpid()}-{base_dir.name.rsplit('-', 1)[-1]}@localhost"
    (base_dir / "rabbitmq-env.conf").write_text("")
    (base_dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
    (base_dir / "rabbitmq.conf").write_text(
        CONFIG.format(
            host=LOOPBACK,
            amqp_port=amqp_port,
            management_port=management_port,
            user=ADMIN_USER,
            password=password,
        )
    )
    with (base_dir / "console.log").open("wb") as console:
        process = subprocess.Popen(
            [str(SERVER_SCRIPT)],
            cwd=base_dir,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=_environment(name, base_dir, dist_port),
            start_new_session=True,  # its own group, so stop() ends exactly this node
        )
    node = RabbitNode(
        name=name,
        amqp_port=amqp_port,
        management_port=management_port,
        password=password,
        base_dir=base_dir,
        process=process,
    )
    deadline = started + START_DEADLINE_SECONDS
    while not node.is_ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = node.log_tail()
            node.stop()
            raise RuntimeError(f"the RabbitMQ node did not start; its log ends:\n{tail}")
        time.sleep(0.2)  # the poll interval of a deadline-bounded wait
    node.started_in_seconds = time.monotonic() - started
    log.info("RabbitMQ node %s started in %.1f s", name, node.started_in_seconds)
    return node
