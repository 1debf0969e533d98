"""The embedded MQTT broker: amqtt on 127.0.0.1, for a platform started without ``mqtt_url``.

On a laptop the README's first command has no broker to point at, so the platform runs one
itself (loopback only) and lists it in the catalogue. The broker runs on its own event loop
in a daemon thread, so it is independent of the web server's loop and workers. Production
points ``DTAAS_MQTT_URL`` at a real broker instead.

Nobody connects anonymously: ``broker_access`` says who may connect and use which topics.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from amqtt.broker import Broker

from dtaas.config import Settings
from dtaas.errors import BackendUnavailable
from dtaas.services import mqtt_names
from dtaas.services.broker_access import GRANT, CheckedBroker, Gatekeeper, Grant

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
DROP_TIMEOUT_SECONDS = 5.0

# The brokers this process runs, by data directory: lets code that holds only the settings
# (the catalogue, a job's environment) find the URL, also when two apps share a process.
_running: dict[Path, EmbeddedBroker] = {}
_running_lock = threading.Lock()


class EmbeddedBroker:
    """An amqtt broker listening on ``127.0.0.1:<port>``, admitting whom its gatekeeper does."""

    def __init__(self, *, port: int, gatekeeper: Gatekeeper) -> None:
        self.port = port
        self.gatekeeper = gatekeeper
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        """The broker's address, without credentials (see :func:`embedded_mqtt_url`)."""
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

    def drop_connections(self, username: str, *, timeout: float = DROP_TIMEOUT_SECONDS) -> int:
        """Close every connection of ``username`` now; returns how many there were."""
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not self.is_running:
            return 0
        done = asyncio.run_coroutine_threadsafe(_drop_connections(broker, username), loop)
        try:
            return done.result(timeout)
        except FutureTimeout:
            log.warning("mqtt connections not dropped within %s s username=%s", timeout, username)
            return 0

    async def _serve(self, started: Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        checks = {"gatekeeper": self.gatekeeper}
        broker = CheckedBroker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
                # Only these two: the default set adds anonymous access, $SYS and packet logs.
                "plugins": {
                    "dtaas.services.broker_access.GatekeeperAuthPlugin": checks,
                    "dtaas.services.broker_access.GatekeeperTopicPlugin": checks,
                },
            }
        )
        try:
            await broker.start()
        except Exception as exc:
            started.set_exception(exc)
            return
        self._broker = broker
        started.set_result(None)
        await self._stopping.wait()
        self._broker = None
        await broker.shutdown()


async def _drop_connections(broker: Broker, username: str) -> int:
    """Close the connected sessions of ``username`` as amqtt closes one taken over."""
    dropped = 0
    for session, handler in list(broker.sessions.values()):
        grant = session.attributes.get(GRANT)
        owned = isinstance(grant, Grant) and grant.username == username
        if not (owned or session.username == username) or not session.transitions.is_connected():
            continue
        try:
            await handler.handle_connection_closed()
            await handler.stop()
        except Exception:  # amqtt's internals: one session must not keep the others open
            log.exception("mqtt connection not dropped client_id=%s", session.client_id)
            continue
        dropped += 1
    return dropped


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
    gatekeeper = Gatekeeper(settings)
    broker = EmbeddedBroker(port=port, gatekeeper=gatekeeper)
    try:
        broker.start()
    except BackendUnavailable:
        # Another program took the port between the probe and the bind: try once more.
        broker = EmbeddedBroker(port=_free_port(), gatekeeper=gatekeeper)
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


def running_broker(settings: Settings) -> EmbeddedBroker | None:
    """The embedded broker this process runs for these settings, if it is running."""
    with _running_lock:
        broker = _running.get(_key(settings))
    return broker if broker is not None and broker.is_running else None


def embedded_mqtt_url(settings: Settings) -> str | None:
    """The URL of the embedded broker this process runs for these settings, if any.

    It carries the platform's own account, which may use every topic below ``dtaas/``:
    the platform's telemetry ingestion and health checks use it; jobs never get it.
    """
    broker = running_broker(settings)
    if broker is None:
        return None
    return mqtt_names.with_credentials(
        broker.url, broker.gatekeeper.platform_username, mqtt_names.platform_password(settings)
    )


def drop_connections(settings: Settings, username: str) -> int:
    """Close the connections of ``username`` to the embedded broker, if this process runs it."""
    broker = running_broker(settings)
    return broker.drop_connections(username) if broker is not None else 0


def _key(settings: Settings) -> Path:
    return settings.data_dir.resolve()
