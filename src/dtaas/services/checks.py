"""The round trip of each kind of service: MQTT publish and receive, AMQP publish and get,
SQL ``SELECT 1``, HTTP GET. Each bounds every step by a deadline and raises CheckFailed with
a short reason that is safe to show to every user."""

from __future__ import annotations

import secrets
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import httpx
import paho.mqtt.client as mqtt
import pika
import pika.exceptions
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from dtaas.services.models import ServiceKind

# How often a waiting check gives its client library a turn, in seconds.
POLL_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class Target:
    """A service to check: its URL (which may carry credentials) and separate credentials."""

    name: str
    kind: ServiceKind
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    # Known before any connection, e.g. a password that can no longer be decrypted.
    problem: str | None = None

    @property
    def key(self) -> str:
        """Identifies a result in the cache: a changed URL or user is a new service."""
        return f"{self.name}\x00{self.kind}\x00{self.url}\x00{self.username or ''}"


class CheckFailed(Exception):
    """Raised by a check with a short reason that is safe to show to every user."""


def _remaining(deadline: float, timeout: float) -> float:
    """Seconds left before ``deadline``. Raises: CheckFailed once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise CheckFailed(f"no answer within {timeout:g} s")
    return left


def _credentials(target: Target) -> tuple[str | None, str | None]:
    """Separate credentials win over those in the URL (settings URLs carry their own)."""
    parts = urlsplit(target.url)
    if target.username is not None:
        return target.username, target.password
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return username, password


def _network_reason(exc: OSError, host: str | None, timeout: float) -> str:
    """A short reason for a socket-level failure."""
    if isinstance(exc, socket.gaierror):
        return f"unknown host {host!r}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens at that address"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return exc.strerror or type(exc).__name__


def check_mqtt(target: Target, deadline: float, timeout: float) -> None:
    """Connect, subscribe to a random topic, publish to it and receive the message.

    Raises: CheckFailed.
    """
    parts = urlsplit(target.url)
    is_tls = parts.scheme == "mqtts"
    host, port = parts.hostname or "", parts.port or (8883 if is_tls else 1883)
    topic = f"dtaas/health/{uuid.uuid4().hex}"
    payload = secrets.token_hex(8).encode()
    flow = _MqttFlow()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"dtaas-health-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv311,
    )
    client.on_connect = flow.on_connect
    client.on_subscribe = flow.on_subscribe
    client.on_message = flow.on_message
    username, password = _credentials(target)
    if username is not None:
        client.username_pw_set(username, password)
    if is_tls:
        client.tls_set()
    client.connect_timeout = _remaining(deadline, timeout)
    try:
        client.connect(host, port, keepalive=max(5, int(timeout) * 2))
    except OSError as exc:
        raise CheckFailed(_network_reason(exc, host, timeout)) from exc
    try:
        _mqtt_until(client, flow, lambda: flow.connected, deadline, timeout)
        client.subscribe(topic, qos=1)
        _mqtt_until(client, flow, lambda: flow.subscribed, deadline, timeout)
        client.publish(topic, payload, qos=1)
        _mqtt_until(client, flow, lambda: payload in flow.received, deadline, timeout)
    finally:
        client.disconnect()
        client.loop(timeout=0)  # sends the DISCONNECT; the socket closes with it


class _MqttFlow:
    """What the broker has answered so far in one MQTT round trip."""

    def __init__(self) -> None:
        self.connected = False
        self.subscribed = False
        self.refused: str | None = None
        self.received: list[bytes] = []

    def on_connect(
        self,
        client: mqtt.Client,  # noqa: ARG002  # paho's callback signature
        userdata: object,  # noqa: ARG002
        flags: mqtt.ConnectFlags,  # noqa: ARG002
        reason: ReasonCode,
        properties: Properties | None,  # noqa: ARG002
    ) -> None:
        if reason.is_failure:
            self.refused = str(reason)
        else:
            self.connected = True

    def on_subscribe(
        self,
        client: mqtt.Client,  # noqa: ARG002
        userdata: object,  # noqa: ARG002
        mid: int,  # noqa: ARG002
        reasons: list[ReasonCode],
        properties: Properties | None,  # noqa: ARG002
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            self.refused = "the broker refused the subscription (check the topic ACLs)"
        else:
            self.subscribed = True

    def on_message(
        self,
        client: mqtt.Client,  # noqa: ARG002
        userdata: object,  # noqa: ARG002
        message: mqtt.MQTTMessage,
    ) -> None:
        self.received.append(bytes(message.payload))


def _mqtt_until(
    client: mqtt.Client,
    flow: _MqttFlow,
    done: Callable[[], bool],
    deadline: float,
    timeout: float,
) -> None:
    """Run paho's network loop in this thread until ``done()`` or the deadline."""
    while not done():
        if flow.refused:
            raise CheckFailed(f"the broker refused: {flow.refused}")
        left = _remaining(deadline, timeout)
        code = client.loop(timeout=min(POLL_SECONDS, left))
        if code != mqtt.MQTT_ERR_SUCCESS:
            reason = flow.refused or mqtt.error_string(code)
            raise CheckFailed(f"the broker closed the connection: {reason}")


def check_amqp(target: Target, deadline: float, timeout: float) -> None:
    """Connect, declare an exclusive auto-delete queue, publish to it and get the message.

    Raises: CheckFailed.
    """
    parameters = pika.URLParameters(target.url)
    if target.username is not None:
        parameters.credentials = pika.PlainCredentials(target.username, target.password or "")
    left = _remaining(deadline, timeout)
    parameters.socket_timeout = left
    parameters.stack_timeout = left
    parameters.blocked_connection_timeout = left
    parameters.connection_attempts = 1
    try:
        connection = pika.BlockingConnection(parameters)
    except Exception as exc:
        raise CheckFailed(_amqp_reason(exc, parameters, timeout)) from exc
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # publish returns once the broker has the message
        queue = channel.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
        payload = secrets.token_hex(8).encode()
        channel.basic_publish(exchange="", routing_key=queue, body=payload, mandatory=True)
        while True:
            _method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if body == payload:
                return
            _remaining(deadline, timeout)
            connection.process_data_events(time_limit=POLL_SECONDS)
    except pika.exceptions.AMQPError as exc:
        raise CheckFailed(_amqp_reason(exc, parameters, timeout)) from exc
    finally:
        if connection.is_open:
            connection.close()


def _amqp_reason(exc: Exception, parameters: pika.URLParameters, timeout: float) -> str:
    if isinstance(exc, pika.exceptions.ProbableAuthenticationError):
        return "authentication failed: check the username and password"
    if isinstance(exc, pika.exceptions.ProbableAccessDeniedError):
        return f"access to virtual host {parameters.virtual_host!r} was denied"
    if isinstance(exc, OSError):
        return _network_reason(exc, parameters.host, timeout)
    # pika wraps the socket's error in its own, in args or in an ``exception`` attribute:
    # AMQPConnectionError(AMQPConnectorSocketConnectError(exception=OSError)).
    inner: object = exc
    for _ in range(4):
        if isinstance(inner, OSError):
            return _network_reason(inner, parameters.host, timeout)
        nested = getattr(inner, "exception", None)
        if nested is None and isinstance(inner, Exception) and inner.args:
            nested = inner.args[0]
        if nested is None:
            break
        inner = nested
    name = type(exc).__name__
    if "Timeout" in name:
        return f"no answer within {timeout:g} s"
    return f"AMQP error: {name}"


def check_postgres(target: Target, deadline: float, timeout: float) -> None:
    """Connect and run ``SELECT 1``.

    Raises: CheckFailed.
    """
    url = target.url.replace("postgresql+psycopg://", "postgresql://", 1)
    left = _remaining(deadline, timeout)
    milliseconds = max(1, int(left * 1000))
    try:
        with psycopg.connect(
            url,
            # libpq counts whole seconds; the waiter enforces the exact timeout.
            connect_timeout=max(1, round(left)),
            options=f"-c statement_timeout={milliseconds}",
            autocommit=True,
            # Separate credentials override the URL's; None leaves the URL's in place.
            user=target.username,
            password=target.password if target.username is not None else None,
        ) as connection:
            connection.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        raise CheckFailed(_postgres_reason(exc, timeout)) from exc


def _postgres_reason(exc: psycopg.Error, timeout: float) -> str:
    text = str(exc).strip()
    if "password authentication failed" in text:
        return "authentication failed: check the username and password"
    if "Connection refused" in text:
        return "connection refused: nothing listens at that address"
    if "timeout expired" in text or "timed out" in text:
        return f"no answer within {timeout:g} s"
    # libpq's first line says what went wrong, after the address; later lines repeat it.
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.rsplit("FATAL:", 1)[-1].strip()


def check_http(target: Target, deadline: float, timeout: float) -> None:
    """GET the URL; any answer below 500 means the service is up.

    Raises: CheckFailed.
    """
    response = _get(target, target.url, deadline, timeout)
    if response.status_code >= 500:
        raise CheckFailed(f"HTTP {response.status_code} {response.reason_phrase}")


def check_influxdb(target: Target, deadline: float, timeout: float) -> None:
    """GET ``/health``; InfluxDB answers 200 with status "pass" when it is ready.

    Raises: CheckFailed.
    """
    response = _get(target, target.url.rstrip("/") + "/health", deadline, timeout)
    if response.status_code != 200:
        raise CheckFailed(f"/health answered HTTP {response.status_code}")
    try:
        status = response.json().get("status")
    except (ValueError, AttributeError):
        raise CheckFailed("/health did not answer like InfluxDB") from None
    if status != "pass":
        raise CheckFailed(f"InfluxDB reports status {status!r}")


def _get(target: Target, url: str, deadline: float, timeout: float) -> httpx.Response:
    username, password = _credentials(target)
    auth = httpx.BasicAuth(username, password or "") if username is not None else None
    left = _remaining(deadline, timeout)
    # trust_env=False: the check must reach the service itself, not a proxy from the env.
    try:
        with httpx.Client(timeout=left, trust_env=False, follow_redirects=False) as client:
            return client.get(url, auth=auth)
    except httpx.TimeoutException as exc:
        raise CheckFailed(f"no answer within {timeout:g} s") from exc
    except httpx.TransportError as exc:
        cause = _os_error_in(exc)
        if cause is not None:
            raise CheckFailed(_network_reason(cause, urlsplit(url).hostname, timeout)) from exc
        raise CheckFailed(f"cannot connect: {type(exc).__name__}") from exc


def _os_error_in(exc: BaseException) -> OSError | None:
    """The socket error under an HTTP library's own exceptions, if there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


CHECKS: dict[ServiceKind, Callable[[Target, float, float], None]] = {
    ServiceKind.MQTT: check_mqtt,
    ServiceKind.AMQP: check_amqp,
    ServiceKind.POSTGRES: check_postgres,
    ServiceKind.INFLUXDB: check_influxdb,
    ServiceKind.HTTP: check_http,
}
