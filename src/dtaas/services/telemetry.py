"""Telemetry ingestion: the platform's subscriber to ``dtaas/+/+/#`` and its batch writer.

Two threads, so the MQTT network loop never waits on the database:

- paho's loop thread receives messages and only queues them (``on_message`` is O(1));
  a full queue drops the message and counts it, since telemetry is QoS 0 anyway.
- the writer thread takes messages off the queue, parses them (``telemetry_payload``),
  checks each topic's instance (it must exist and belong to the user the topic names;
  answers are cached) and writes the points in batches: when ``telemetry_batch_points``
  are pending, when the oldest has waited ``telemetry_flush_seconds``, or when no message
  came for ``IDLE_FLUSH_SECONDS``, whichever is first. It also deletes points past
  ``telemetry_retention_days`` once at start and then every hour.

One ingestor runs per site, in the process that runs the supervisor: two would store
every point twice. Nothing here raises into paho or stops on a bad message; every
message ends up counted under one outcome (``counts``, also on ``/metrics``).
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from dtaas.config import Settings
from dtaas.lifecycle.models import Instance
from dtaas.services import telemetry_store
from dtaas.services.models import ServiceKind
from dtaas.services.service import platform_url
from dtaas.services.telemetry_payload import (
    SUBSCRIPTION,
    BadPayload,
    Topic,
    parse_payload,
    parse_topic,
)

log = logging.getLogger(__name__)

OUTCOMES = (
    "stored",
    "empty",  # valid JSON without a numeric field
    "bad_topic",
    "unknown_instance",  # no such instance, or not the topic's user's
    "bad_payload",
    "overflow",  # the queue was full
    "write_failed",
)
QUEUE_MESSAGES = 100_000  # at ~200 B a message, at most ~20 MB waiting for the database
KNOWN_SECONDS = 30.0  # an instance's owner is re-read this often (instances get deleted)
CACHE_ENTRIES = 10_000
RETENTION_EVERY_SECONDS = 3600.0
# A lull this long in the stream writes what is pending at once: a DT that publishes now
# and then sees its points in ~50 ms, while a busy stream still fills whole batches.
IDLE_FLUSH_SECONDS = 0.05
WRITE_ATTEMPTS = 3
STOP_TIMEOUT_SECONDS = 10.0
RECONNECT_MAX_SECONDS = 30
_STOP = object()

Message = tuple[str, bytes, float]  # topic, payload, received (epoch seconds)


@dataclass
class _Counts:
    """Messages by outcome and points stored; the writer thread and paho's both add."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    points: int = 0

    def add(self, outcome: str, count: int = 1) -> None:
        with self.lock:
            self.messages[outcome] += count


@dataclass(slots=True)
class _Parsed:
    """A message read as telemetry, waiting for its instance to be checked and written."""

    topic: Topic
    rows: list[telemetry_store.Row]


class _MetricsCollector(Collector):
    """Exposes an ingestor's counts on the app's ``/metrics``."""

    def __init__(self, ingestor: TelemetryIngestor) -> None:
        self.ingestor = ingestor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counts = self.ingestor.counts()
        messages = CounterMetricFamily(
            "dtaas_telemetry_messages",
            "Telemetry messages received, by what became of them",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            messages.add_metric([outcome], counts[outcome])
        yield messages
        yield CounterMetricFamily(
            "dtaas_telemetry_points_stored", "Telemetry points written", value=counts["points"]
        )
        yield GaugeMetricFamily(
            "dtaas_telemetry_queue_messages",
            "Telemetry messages waiting to be written",
            value=self.ingestor.queued(),
        )


class TelemetryIngestor:
    """Subscribes to every instance's telemetry topic and stores the points."""

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        broker_url: str,
        registry: CollectorRegistry | None = None,
        retention_every_seconds: float = RETENTION_EVERY_SECONDS,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.broker_url = broker_url
        self.retention_every_seconds = retention_every_seconds
        self._registry = registry
        self._collector = _MetricsCollector(self)
        self._queue: queue.Queue[Message | object] = queue.Queue(QUEUE_MESSAGES)
        self._counts = _Counts()
        self._owners: dict[int, tuple[str, float]] = {}
        self._subscribed = threading.Event()
        self._writer: threading.Thread | None = None
        self._client = self._make_client()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect (retrying in the background until the broker answers) and start writing."""
        parts = urlsplit(self.broker_url)
        self._writer = threading.Thread(target=self._write_loop, name="telemetry-writer")
        self._writer.daemon = True  # a stuck database must not keep the process alive
        self._writer.start()
        self._client.connect_async(parts.hostname or "127.0.0.1", parts.port or _port(parts))
        self._client.loop_start()
        if self._registry is not None:
            self._registry.register(self._collector)
        log.info("telemetry subscriber started broker=%s", _shown(self.broker_url))

    def stop(self, *, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Disconnect, write what is queued, and end both threads."""
        self._client.disconnect()
        self._client.loop_stop()
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.warning("telemetry writer did not stop within %s s", timeout)
        if self._registry is not None:
            self._registry.unregister(self._collector)
        log.info("telemetry subscriber stopped")

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the broker acknowledged the subscription within ``timeout`` seconds."""
        return self._subscribed.wait(timeout)

    def counts(self) -> dict[str, int]:
        """Messages by outcome (``OUTCOMES``) and ``points`` stored, since start."""
        with self._counts.lock:
            return {**self._counts.messages, "points": self._counts.points}

    def queued(self) -> int:
        return self._queue.qsize()

    # --- MQTT (paho's thread) ----------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        parts = urlsplit(self.broker_url)
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dtaas-telemetry-{uuid.uuid4().hex[:12]}",
            clean_session=True,
        )
        if parts.username:
            client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme == "mqtts":
            client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=RECONNECT_MAX_SECONDS)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        del userdata, flags, properties
        if reason.is_failure:
            log.warning("telemetry broker refused the connection reason=%s", reason)
            return
        # Subscribing on every connect renews the subscription after a reconnect.
        client.subscribe(SUBSCRIPTION, qos=0)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: object,
    ) -> None:
        del client, userdata, flags, properties
        self._subscribed.clear()
        if reason.is_failure:
            log.warning("telemetry broker connection lost reason=%s; reconnecting", reason)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: object,
    ) -> None:
        del client, userdata, mid, properties
        if all(not reason.is_failure for reason in reasons):
            self._subscribed.set()
        else:
            log.warning("telemetry subscription to %s refused by the broker", SUBSCRIPTION)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        del client, userdata
        try:
            self._queue.put_nowait((message.topic, bytes(message.payload), time.time()))
        except queue.Full:
            self._counts.add("overflow")

    # --- writing (the writer thread) ---------------------------------------------------------

    def _write_loop(self) -> None:
        batch_points = self.settings.telemetry_batch_points
        flush_seconds = self.settings.telemetry_flush_seconds
        next_sweep = time.monotonic()
        pending: list[_Parsed] = []
        pending_points = 0
        due = float("inf")  # when the oldest pending message must be written
        last_arrival = 0.0
        stopping = False
        while not stopping:
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep()
                next_sweep = now + self.retention_every_seconds
            wake = min(due, last_arrival + IDLE_FLUSH_SECONDS) if pending else next_sweep
            try:
                item = self._queue.get(timeout=max(wake - now, 0.0))
                idle = False
            except queue.Empty:
                item, idle = None, True
            # Take what else is already waiting, without blocking, up to a batch.
            while item is not None:
                if item is _STOP:
                    stopping = True
                    break
                parsed = self._parse(item)  # type: ignore[arg-type]  # only messages and _STOP are queued
                last_arrival = time.monotonic()
                if parsed is not None:
                    if not pending:
                        due = last_arrival + flush_seconds
                    pending.append(parsed)
                    pending_points += len(parsed.rows)
                if pending_points >= batch_points:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    item = None
            full = pending_points >= batch_points
            if pending and (stopping or full or idle or time.monotonic() >= due):
                self._store(pending)
                pending, pending_points, due = [], 0, float("inf")

    def _parse(self, message: Message) -> _Parsed | None:
        """A message's instance and rows, or None (counted) if it cannot be telemetry."""
        topic_text, payload, received = message
        topic = parse_topic(topic_text)
        if topic is None:
            self._counts.add("bad_topic")
            return None
        try:
            when, values = parse_payload(payload, received=received)
        except BadPayload as exc:
            self._counts.add("bad_payload")
            log.debug("telemetry message dropped topic=%s reason=%s", topic_text, exc)
            return None
        if not values:
            self._counts.add("empty")
            return None
        rows = [(topic.instance_id, name, when, value) for name, value in values.items()]
        return _Parsed(topic=topic, rows=rows)

    def _sweep(self) -> None:
        days = self.settings.telemetry_retention_days
        if days <= 0:
            return
        try:
            telemetry_store.delete_expired(self.engine, before=time.time() - days * 86_400)
        except SQLAlchemyError:
            log.exception("telemetry retention failed; it is tried again in an hour")

    def _store(self, parsed: list[_Parsed]) -> None:
        """Write the messages whose instance exists and is the topic's user's; count the rest."""
        owners = self._owners_of({item.topic.instance_id for item in parsed})
        by_message: list[tuple[int, list[telemetry_store.Row]]] = []
        for item in parsed:
            if owners.get(item.topic.instance_id) != item.topic.username:
                self._counts.add("unknown_instance")
                continue
            by_message.append((item.topic.instance_id, item.rows))
        self._write(by_message)

    def _write(self, by_message: list[tuple[int, list[telemetry_store.Row]]]) -> None:
        if not by_message:
            return
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            rows = [row for _, message_rows in by_message for row in message_rows]
            try:
                with self.engine.begin() as connection:
                    telemetry_store.insert_points(connection, rows)
            except IntegrityError:
                # An instance was deleted since its owner was cached: look again, drop its rows.
                self._owners.clear()
                alive = self._owners_of({instance_id for instance_id, _ in by_message})
                kept = [(i, r) for i, r in by_message if alive.get(i) is not None]
                self._counts.add("unknown_instance", len(by_message) - len(kept))
                by_message = kept
                continue
            except SQLAlchemyError as exc:
                if attempt < WRITE_ATTEMPTS:
                    log.warning("telemetry batch not written (%s); retrying", type(exc).__name__)
                    time.sleep(0.5 * attempt)
                    continue
                log.exception("telemetry batch dropped messages=%s", len(by_message))
                self._counts.add("write_failed", len(by_message))
                return
            self._counts.add("stored", len(by_message))
            with self._counts.lock:
                self._counts.points += len(rows)
            return
        self._counts.add("write_failed", len(by_message))

    def _owners_of(self, instance_ids: Iterable[int]) -> dict[int, str | None]:
        """The owner's username of each instance (None: no such instance).

        Owners are cached; missing instances are not: one may be created any moment, and
        a topic naming an id before it exists (another site on a shared broker, a typo, an
        attacker) must not hide the new instance's first points. Looking them up again
        costs one query per batch, whatever the number of ids.
        """
        now = time.monotonic()
        found: dict[int, str | None] = {}
        missing = []
        for instance_id in instance_ids:
            cached = self._owners.get(instance_id)
            if cached is not None and cached[1] > now:
                found[instance_id] = cached[0]
            else:
                missing.append(instance_id)
        if not missing:
            return found
        if len(self._owners) + len(missing) > CACHE_ENTRIES:
            self._owners.clear()  # topics naming ever new instances must not grow it forever
        try:
            # Reads lifecycle's table directly: this thread has no user to ask the service as.
            with self.engine.connect().execution_options(sqlite_begin="DEFERRED") as connection:
                rows = connection.execute(
                    select(Instance.id, Instance.owner_name).where(Instance.id.in_(missing))
                ).all()
        except SQLAlchemyError:
            log.exception("telemetry could not look up instances; their messages are dropped")
            return found
        owners = {row.id: row.owner_name for row in rows}
        for instance_id in missing:
            owner = owners.get(instance_id)
            if owner is not None:
                self._owners[instance_id] = (owner, now + KNOWN_SECONDS)
            found[instance_id] = owner
        return found


def _port(parts: object) -> int:
    return 8883 if getattr(parts, "scheme", "") == "mqtts" else 1883


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or _port(parts)}"


def start_telemetry(
    settings: Settings, engine: Engine, *, registry: CollectorRegistry | None = None
) -> TelemetryIngestor | None:
    """Start ingesting from the site's MQTT service; None when the site has none."""
    url = platform_url(settings, ServiceKind.MQTT)
    if not url:
        log.info("telemetry not ingested: no MQTT broker configured or embedded")
        return None
    ingestor = TelemetryIngestor(
        settings=settings, engine=engine, broker_url=url, registry=registry
    )
    ingestor.start()
    return ingestor
