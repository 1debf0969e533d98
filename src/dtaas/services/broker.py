"""The embedded MQTT broker: amqtt on 127.0.0.1, for a platform started without ``mqtt_url``.

On a laptop the README's first command has no broker to point at, so the platform runs one
itself (anonymous, loopback only) and lists it in the catalogue. The broker runs on its own
event loop in a daemon thread, so it is independent of the web server's loop and workers.
Production points ``DTAAS_MQTT_URL`` at a real broker instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import Future
from pathlib import Path

from amqtt.broker import Broker

from dtaas.config import Settings
from dtaas.errors import BackendUnavailable

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0

# The brokers this process runs, by data directory: lets code that holds only the settings
# (the catalogue, a job's environment) find the URL, also when two apps share a process.
_running: dict[Path, EmbeddedBroker] = {}
_running_lock = threading.Lock()


class EmbeddedBroker:
    """An anonymous amqtt broker listening on ``127.0.0.1:<port>``."""

    def __init__(self, *, port: int) -> None:
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Start listening; returns once the broker accepts connections.

        Raises: BackendUnavailable if the broker cannot start (e.g. the port is taken).
        """
        started: Future[None] = Future()
        self._thread = threading.Thread(
            target=asyncio.run,
            args=(self._serve(started),),
            name=f"embedded-mqtt-{self.port}",
            daemon=True,  # never keeps a stopping platform alive
        )
        self._thread.start()
        try:
            started.result(timeout=timeout)
        except Exception as exc:
            raise BackendUnavailable(
                f"The embedded MQTT broker could not listen on {HOST}:{self.port} ({exc}); "
                "set DTAAS_EMBEDDED_MQTT_PORT to a free port or DTAAS_MQTT_URL to a broker."
            ) from exc
        log.info("embedded mqtt broker started url=%s", self.url)

    def stop(self, *, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Disconnect the clients, close the listener and end the broker's thread."""
        if self._loop is not None and self._stopping is not None and self.is_running:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("embedded mqtt broker did not stop within %s s", timeout)
            else:
                log.info("embedded mqtt broker stopped url=%s", self.url)

    async def _serve(self, started: Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
                # Only anonymous access: the default set adds $SYS topics and packet logs.
                "plugins": {
                    "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
                },
            }
        )
        try:
            await broker.start()
        except Exception as exc:
            started.set_exception(exc)
            return
        started.set_result(None)
        await self._stopping.wait()
        await broker.shutdown()


def _is_free(port: int) -> bool:
    """Whether ``127.0.0.1:port`` can be listened on now (as asyncio would, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


def _quiet_library_logs() -> None:
    # amqtt logs every connection and state change at INFO; the platform's log is for people.
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)


def is_wanted(settings: Settings) -> bool:
    """Whether the platform should run its own MQTT broker with these settings."""
    return settings.embedded_mqtt and not settings.mqtt_url


def start_embedded_mqtt(settings: Settings) -> EmbeddedBroker | None:
    """Start the embedded broker if the settings want one; None if they do not.

    A busy configured port falls back to a free one (with a warning): the catalogue and the
    jobs' environment always carry the URL actually used. A broker that cannot start is
    logged and the platform runs on; the catalogue then shows MQTT as down, saying why.
    """
    if not is_wanted(settings):
        return None
    _quiet_library_logs()
    port = settings.embedded_mqtt_port
    if port == 0 or not _is_free(port):
        if port:
            log.warning("embedded mqtt port %s is taken; using a free port instead", port)
        port = _free_port()
    broker = EmbeddedBroker(port=port)
    try:
        broker.start()
    except BackendUnavailable:
        # Another program took the port between the probe and the bind: try once more.
        broker = EmbeddedBroker(port=_free_port())
        try:
            broker.start()
        except BackendUnavailable:
            log.exception("embedded mqtt broker not started")
            return None
    with _running_lock:
        _running[_key(settings)] = broker
    return broker


def stop_embedded_mqtt(settings: Settings, broker: EmbeddedBroker) -> None:
    """Stop a broker started by :func:`start_embedded_mqtt` and forget it."""
    with _running_lock:
        if _running.get(_key(settings)) is broker:
            del _running[_key(settings)]
    broker.stop()


def embedded_mqtt_url(settings: Settings) -> str | None:
    """The URL of the embedded broker this process runs for these settings, if any."""
    with _running_lock:
        broker = _running.get(_key(settings))
    return broker.url if broker is not None and broker.is_running else None


def _key(settings: Settings) -> Path:
    return settings.data_dir.resolve()
