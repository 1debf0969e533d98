"""A private Mosquitto with the dynamic-security plugin, for tests of per-instance accounts.

``start_dynsec_mosquitto(folder)`` writes a config (``listener <port> 127.0.0.1``, no
anonymous clients, the plugin) and a dynsec file made by ``mosquitto_ctrl dynsec init``
with one admin client, starts ``/usr/sbin/mosquitto`` on a free loopback port, waits until
it answers an MQTT CONNECT and returns it; ``stop()`` ends that process (only that one).
The ``dynsec_mosquitto`` fixture runs one per test module.
"""

from __future__ import annotations

import getpass
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_CTRL = "/usr/bin/mosquitto_ctrl"
PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
HOST = "127.0.0.1"
ADMIN = "dtaas-admin"
START_SECONDS = 10.0
STOP_SECONDS = 5.0
POLL_SECONDS = 0.05


@dataclass
class Mosquitto:
    """A running private broker and its dynsec admin's credentials."""

    port: int
    admin_password: str = field(repr=False)
    process: subprocess.Popen[bytes]
    folder: Path

    @property
    def admin_url(self) -> str:
        """The URL the platform is given: the dynsec admin's account."""
        return f"mqtt://{ADMIN}:{self.admin_password}@{HOST}:{self.port}"

    def log(self) -> str:
        path = self.folder / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Terminate the broker this helper started, and wait for it."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_SECONDS)


def is_available() -> bool:
    """Whether Mosquitto, mosquitto_ctrl and the dynsec plugin are installed."""
    return all(Path(path).exists() for path in (MOSQUITTO, MOSQUITTO_CTRL, PLUGIN))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(port: int, password: str) -> bool:
    """Whether the broker at ``port`` accepts the admin's MQTT CONNECT now."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(ADMIN, password)
    try:
        client.connect(HOST, port, keepalive=5)
    except OSError:
        return False
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if client.loop(timeout=POLL_SECONDS) != mqtt.MQTT_ERR_SUCCESS:
                return False
            if client.is_connected():
                return True
        return False
    finally:
        client.disconnect()


def start_dynsec_mosquitto(folder: Path) -> Mosquitto:
    """Start a Mosquitto with dynsec on a free 127.0.0.1 port; returns once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(16)
    dynsec = folder / "dynamic-security.json"
    subprocess.run(
        [MOSQUITTO_CTRL, "dynsec", "init", str(dynsec), ADMIN, password],
        check=True,
        capture_output=True,
        timeout=START_SECONDS,
    )
    port = _free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        f"listener {port} {HOST}\n"
        "allow_anonymous false\n"
        "persistence false\n"
        # Run as root, Mosquitto would drop to the user "mosquitto", who cannot write here.
        f"user {getpass.getuser()}\n"
        f"plugin {PLUGIN}\n"
        f"plugin_opt_config_file {dynsec}\n"
        f"log_dest file {folder / 'mosquitto.log'}\n"
        "log_type error\nlog_type warning\nlog_type notice\n"
    )
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)],
        # Nothing of the test's own environment (see tests/rabbitmq.py): a test that kills
        # the processes naming its folder must not find the shared broker among them.
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    broker = Mosquitto(port=port, admin_password=password, process=process, folder=folder)
    deadline = time.monotonic() + START_SECONDS
    while not _answers(port, password):
        if process.poll() is not None or time.monotonic() > deadline:
            broker.stop()
            raise AssertionError(f"mosquitto did not start on {HOST}:{port}:\n{broker.log()}")
        time.sleep(POLL_SECONDS)  # the poll interval of a deadline-bounded wait
    return broker


@pytest.fixture(scope="module")
def dynsec_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A private Mosquitto with dynsec for the module's tests (about 50 ms to start)."""
    if not is_available():
        pytest.fail("Mosquitto with its dynamic-security plugin is not installed")
    broker = start_dynsec_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield broker
    finally:
        broker.stop()
