"""The embedded MQTT broker: a real client round trip through it (as the platform's own
account; anonymous clients are refused), loopback only, started and stopped with the app,
and a busy port handled. Per-instance accounts: tests/services/test_mqtt_isolation.py."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import psutil
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.orm import Session

from dtaas import db
from dtaas.api.app import create_app
from dtaas.config import Settings
from dtaas.security.models import User
from dtaas.services import broker as embedded
from dtaas.services import mqtt_names
from dtaas.services.checks import Target
from dtaas.services.health import run_check
from dtaas.services.models import HealthStatus, ServiceKind
from tests.factories import bearer

ROUND_TRIP_SECONDS = 5.0


def _settings(tmp_path: Path, **over: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "secret_key": "test-secret-key-not-for-production",
        "demo": False,
        "log_level": "WARNING",
        "supervisor": False,
        "embedded_mqtt_port": 0,  # any free port: tests run side by side
    }
    values.update(over)
    return Settings.model_validate(values)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Settings, embedded.EmbeddedBroker]]:
    settings = _settings(tmp_path)
    broker = embedded.start_embedded_mqtt(settings)
    assert broker is not None
    try:
        yield settings, broker
    finally:
        embedded.stop_embedded_mqtt(settings, broker)


def _publish_and_receive(url: str) -> bytes:
    """Subscribe, publish and receive one message through the broker at ``url`` (with the
    credentials in it)."""
    parts = urlsplit(url)
    topic = f"dtaas/test/{uuid.uuid4().hex}"
    received = threading.Event()
    payloads: list[bytes] = []

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        payloads.append(bytes(message.payload))
        received.set()

    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.username_pw_set(unquote(parts.username or ""), unquote(parts.password or ""))
    client.connect("127.0.0.1", parts.port or 1883)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(ROUND_TRIP_SECONDS), "no SUBACK from the embedded broker"
        client.publish(topic, b"21.5", qos=1).wait_for_publish(ROUND_TRIP_SECONDS)
        assert received.wait(ROUND_TRIP_SECONDS), "the message did not come back"
    finally:
        client.disconnect()
        client.loop_stop()
    return payloads[0]


def _listening_addresses(port: int) -> set[str]:
    """The local addresses this process listens on at ``port``."""
    return {
        connection.laddr.ip
        for connection in psutil.Process(os.getpid()).net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def test_a_client_round_trip_goes_through_the_embedded_broker(
    running: tuple[Settings, embedded.EmbeddedBroker],
) -> None:
    settings, broker = running
    url = embedded.embedded_mqtt_url(settings)

    assert url is not None and urlsplit(url).port == broker.port
    assert _publish_and_receive(url) == b"21.5"


def test_a_burst_published_just_before_disconnecting_is_delivered_whole(
    running: tuple[Settings, embedded.EmbeddedBroker],
) -> None:
    """amqtt dropped the PUBLISH packets still queued when a DISCONNECT came (half of a
    burst like this one); a DT that publishes and exits must not lose its last points."""
    settings, broker = running
    account = (mqtt_names.platform_username(settings), mqtt_names.platform_password(settings))
    topic, count = f"dtaas/test/{uuid.uuid4().hex}", 3000
    received = 0
    lock, all_in, subscribed = threading.Lock(), threading.Event(), threading.Event()

    def on_message(_client: mqtt.Client, _userdata: object, _message: mqtt.MQTTMessage) -> None:
        nonlocal received
        with lock:
            received += 1
            if received == count:
                all_in.set()

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
    subscriber.username_pw_set(*account)
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.connect("127.0.0.1", broker.port)
    subscriber.loop_start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    publisher.username_pw_set(*account)
    publisher.max_queued_messages_set(0)
    try:
        subscriber.subscribe(topic, qos=0)
        assert subscribed.wait(ROUND_TRIP_SECONDS), "no SUBACK from the embedded broker"
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        for n in range(count):
            last = publisher.publish(topic, f'{{"x": {n}}}', qos=0)
        last.wait_for_publish(ROUND_TRIP_SECONDS)
        publisher.disconnect()
        all_in.wait(30)
    finally:
        publisher.loop_stop()
        subscriber.disconnect()
        subscriber.loop_stop()
    assert received == count


def test_the_embedded_broker_listens_on_loopback_only(
    running: tuple[Settings, embedded.EmbeddedBroker],
) -> None:
    _settings_used, broker = running

    assert _listening_addresses(broker.port) == {"127.0.0.1"}
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"


def test_the_health_check_of_the_embedded_broker_is_up(
    running: tuple[Settings, embedded.EmbeddedBroker],
) -> None:
    settings, broker = running

    health = run_check(
        Target(name="mqtt", kind=ServiceKind.MQTT, url=embedded.embedded_mqtt_url(settings) or ""),
        timeout=2.0,
    )

    assert embedded.embedded_mqtt_url(settings) == (
        f"mqtt://{mqtt_names.platform_username(settings)}:"
        f"{mqtt_names.platform_password(settings)}@127.0.0.1:{broker.port}"
    )
    assert health.status == HealthStatus.UP, health.error


def test_a_stopped_broker_closes_its_port_and_is_forgotten(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    broker = embedded.start_embedded_mqtt(settings)
    assert broker is not None

    embedded.stop_embedded_mqtt(settings, broker)

    assert not broker.is_running
    assert _refuses(broker.port)
    assert embedded.embedded_mqtt_url(settings) is None


def test_a_busy_configured_port_falls_back_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        settings = _settings(tmp_path, embedded_mqtt_port=busy)
        broker = embedded.start_embedded_mqtt(settings)
        assert broker is not None
        try:
            url = embedded.embedded_mqtt_url(settings)
            assert broker.port != busy
            assert url is not None and url.endswith(f"@127.0.0.1:{broker.port}")
            assert _publish_and_receive(url) == b"21.5"
        finally:
            embedded.stop_embedded_mqtt(settings, broker)


@pytest.mark.parametrize(
    "over",
    [{"mqtt_url": "mqtt://127.0.0.1:1883"}, {"embedded_mqtt": False}],
    ids=["real-broker-configured", "turned-off"],
)
def test_no_embedded_broker_when_a_real_one_is_configured_or_it_is_off(
    tmp_path: Path, over: dict[str, object]
) -> None:
    settings = _settings(tmp_path, **over)

    assert embedded.start_embedded_mqtt(settings) is None
    assert embedded.embedded_mqtt_url(settings) is None


def test_the_app_runs_the_broker_for_its_lifetime_and_lists_it(
    settings: Settings, session: Session, admin: User
) -> None:
    # The README's first start: no mqtt_url, so the platform brings its own broker.
    laptop = settings.model_copy(
        update={"mqtt_url": None, "embedded_mqtt": True, "embedded_mqtt_port": 0}
    )
    app = create_app(laptop)

    def test_session() -> Iterator[Session]:
        yield session

    app.dependency_overrides[db.get_session] = test_session
    headers = bearer(session, laptop, admin)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        listed = client.get("/api/v1/services/mqtt", headers=headers)
        url = embedded.embedded_mqtt_url(laptop)
        assert url is not None
        port = int(url.rsplit(":", 1)[1])
        assert _listening_addresses(port) == {"127.0.0.1"}

    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["source"] == "embedded"
    # The address alone; the platform's account is named, its password shown to nobody.
    assert body["url"] == f"mqtt://127.0.0.1:{port}"
    assert body["username"] == mqtt_names.platform_username(laptop)
    assert body["has_password"] is True
    assert body["env_var"] == "DTAAS_MQTT_URL"
    assert body["health"]["status"] == "up", body["health"]
    assert embedded.embedded_mqtt_url(laptop) is None
    assert _refuses(port)
