"""The machine's real services and two kinds of dead endpoint, for the services tests."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

MOSQUITTO_URL = os.environ.get("DTAAS_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
RABBITMQ_URL = os.environ.get("DTAAS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get(
    "DTAAS_TEST_SERVICE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SCHEMES = {
    "mqtt": "mqtt",
    "amqp": "amqp",
    "postgres": "postgresql",
    "influxdb": "http",
    "http": "http",
}


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that is bound but not listened on: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers:
    what a hung or blackholed service looks like to a client."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock.getsockname()[1]


def url_at(kind: str, port: int) -> str:
    """A URL of ``kind`` pointing at ``127.0.0.1:port``."""
    return f"{SCHEMES[kind]}://127.0.0.1:{port}/"


class Stopwatch:
    """Seconds since it was made."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
