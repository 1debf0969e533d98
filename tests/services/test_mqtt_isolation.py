"""Per-instance MQTT accounts on each broker that can confine them: the embedded amqtt and a
private Mosquitto with its dynamic-security plugin (tests/mosquitto.py).

Instance A (alice's) and B (bob's) get accounts as a job would (``accounts.provision``);
the tests then connect with real paho clients and check what the broker lets through.
"Nothing arrived" is only concluded after a later message on the same connection did
arrive (a broker delivers in order), never after a pause.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session

from dtaas import db
from dtaas.api.app import create_app
from dtaas.config import Settings
from dtaas.errors import BackendUnavailable
from dtaas.security.models import User
from dtaas.services import accounts, broker_access, mqtt_accounts, mqtt_dynsec, mqtt_names
from dtaas.services import broker as embedded
from dtaas.services.checks import Target
from dtaas.services.health import run_check
from dtaas.services.models import HealthStatus, ServiceKind
from dtaas.services.service import connection_env
from tests.factories import bearer
from tests.mosquitto import ADMIN, Mosquitto, dynsec_mosquitto, start_dynsec_mosquitto
from tests.services.support import closed_port

__all__ = ["dynsec_mosquitto"]  # the module-scoped fixture, used by ``site``

WAIT_SECONDS = 5.0
A, B = 1, 2  # instance ids; each test's site has its own account names


# --- a site and its broker -----------------------------------------------------------------


@dataclass
class Site:
    """A site's settings on one broker, and its instances' accounts as a job gets them."""

    broker: str
    settings: Settings
    platform_url: str  # the platform's own account (the embedded one, or the dynsec admin)
    exists: Callable[[int], bool]
    restart: Callable[[], None] = lambda: None
    owners: dict[int, str] = field(default_factory=dict)

    def provision(self, instance_id: int, owner: str) -> str:
        """The DTAAS_MQTT_URL a job of this instance gets."""
        self.owners[instance_id] = owner
        env = accounts.provision(
            self.settings, instance_id=instance_id, owner=owner, kinds=["mqtt"]
        )
        return env["DTAAS_MQTT_URL"]

    def prefix(self, instance_id: int) -> str:
        return mqtt_names.topic_prefix(self.owners[instance_id], instance_id)


def _settings(data_dir: Path, **over: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "secret_key": "test-secret-key-not-for-production",
        "demo": False,
        "log_level": "WARNING",
        "supervisor": False,
        "embedded_mqtt_port": 0,
    }
    values.update(over)
    return Settings.model_validate(values)


def _embedded_site(tmp_path: Path) -> Iterator[Site]:
    settings = _settings(tmp_path / "data", mqtt_url=None, embedded_mqtt=True)
    running = [embedded.start_embedded_mqtt(settings)]
    assert running[0] is not None, "the embedded broker did not start"

    def restart() -> None:
        stopped = running.pop()
        assert stopped is not None
        embedded.stop_embedded_mqtt(settings, stopped)
        running.append(embedded.start_embedded_mqtt(settings))
        assert running[0] is not None, "the embedded broker did not start again"

    def url() -> str:
        found = embedded.embedded_mqtt_url(settings)
        assert found is not None
        return found

    site = Site(
        broker="embedded",
        settings=settings,
        platform_url=url(),
        exists=lambda instance_id: broker_access.read_account(settings, instance_id) is not None,
        restart=restart,
    )
    try:
        yield site
    finally:
        if running[0] is not None:
            embedded.stop_embedded_mqtt(settings, running[0])


def _dynsec_site(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Site]:
    settings = _settings(
        tmp_path / "data", mqtt_url=mosquitto.admin_url, mqtt_dynsec=True, embedded_mqtt=False
    )
    yield Site(
        broker="dynsec",
        settings=settings,
        platform_url=mosquitto.admin_url,
        exists=lambda instance_id: mqtt_dynsec.exists(settings, instance_id),
    )


@pytest.fixture(params=["embedded", "dynsec"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    """A site on the embedded broker, or on the module's Mosquitto with dynsec."""
    if request.param == "embedded":
        yield from _embedded_site(tmp_path)
    else:
        yield from _dynsec_site(tmp_path, request.getfixturevalue("dynsec_mosquitto"))


# --- an MQTT client that records what the broker answered ----------------------------------


class Peer:
    """One paho connection, with the broker's answers and the messages it received."""

    def __init__(self, url: str, *, anonymous: bool = False) -> None:
        parts = urlsplit(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"isolation-{uuid.uuid4().hex[:12]}"
        )
        if parts.username and not anonymous:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        # paho would reconnect a refused or dropped client; the tests want to see it stay out.
        self.client.reconnect_delay_set(min_delay=60, max_delay=60)
        self.answered = threading.Event()
        self.dropped = threading.Event()
        self.accepted = False
        self.received: list[tuple[str, bytes]] = []
        self._arrived = threading.Condition()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._subscribed = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        self.client.loop_start()
        assert self.answered.wait(WAIT_SECONDS), "no CONNACK"

    def _on_connect(
        self, _c: object, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        self.accepted = not reason.is_failure
        self.answered.set()

    def _on_disconnect(self, *_args: object) -> None:
        self.dropped.set()

    def _on_subscribe(
        self, _c: object, _u: object, mid: int, reasons: list[ReasonCode], _p: object
    ) -> None:
        with self._subscribed:
            self._subacks[mid] = reasons
            self._subscribed.notify_all()

    def _on_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self.received.append((message.topic, bytes(message.payload)))
            self._arrived.notify_all()

    def subscribe(self, topic_filter: str) -> bool:
        """Whether the broker granted the subscription."""
        _result, mid = self.client.subscribe(topic_filter, qos=1)
        assert mid is not None, f"paho did not send the SUBSCRIBE for {topic_filter}"
        with self._subscribed:
            assert self._subscribed.wait_for(lambda: mid in self._subacks, WAIT_SECONDS), (
                f"no SUBACK for {topic_filter}"
            )
            return not any(reason.is_failure for reason in self._subacks[mid])

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish with QoS 1 and wait for the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_SECONDS)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for(self, payload: bytes) -> list[bytes]:
        """Wait until ``payload`` arrived; returns every payload received so far."""
        with self._arrived:
            assert self._arrived.wait_for(
                lambda: any(got == payload for _, got in self.received), WAIT_SECONDS
            ), f"{payload!r} did not arrive; received {self.received}"
            return [got for _, got in self.received]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def connect() -> Iterator[Callable[..., Peer]]:
    """``connect(url, anonymous=False)``: a Peer, closed after the test."""
    peers: list[Peer] = []

    def make(url: str, *, anonymous: bool = False) -> Peer:
        peer = Peer(url, anonymous=anonymous)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.close()


def _token() -> bytes:
    return uuid.uuid4().hex.encode()


def _owners() -> tuple[str, str]:
    # Unique users: the module's Mosquitto is shared by every test of the module.
    tag = uuid.uuid4().hex[:8]
    return f"alice{tag}", f"bob{tag}"


# --- each broker confines instances to their prefixes ----------------------------------------


def test_an_instance_uses_its_own_prefix_and_the_platform_receives_its_telemetry(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, _bob = _owners()
    url_a = site.provision(A, alice)
    platform = connect(site.platform_url)
    assert platform.subscribe("dtaas/+/+/#")
    peer_a = connect(url_a)
    telemetry = b'{"x": 1.5}'

    granted = peer_a.subscribe(site.prefix(A) + "#")
    peer_a.publish(site.prefix(A) + "telemetry", telemetry)

    assert peer_a.accepted and granted
    assert peer_a.wait_for(telemetry) == [telemetry]
    assert platform.wait_for(telemetry) == [telemetry]
    assert platform.received == [(f"dtaas/{alice}/{A}/telemetry", telemetry)]


def test_an_instance_cannot_subscribe_to_or_read_another_instances_topics(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, bob = _owners()
    url_a, url_b = site.provision(A, alice), site.provision(B, bob)
    platform = connect(site.platform_url)
    assert platform.subscribe("dtaas/+/+/#")
    peer_a, peer_b = connect(url_a), connect(url_b)
    refused = {
        topic_filter: not peer_a.subscribe(topic_filter)
        for topic_filter in (
            site.prefix(B) + "#",
            site.prefix(B) + "telemetry",
            f"dtaas/{bob}/+/#",
            "dtaas/+/+/#",
            "dtaas/#",
            "#",
        )
    }
    assert peer_a.subscribe(site.prefix(A) + "#")
    secret, marker = _token(), _token()

    peer_b.publish(site.prefix(B) + "telemetry", secret)
    platform.wait_for(secret)  # routed to every subscriber by now
    peer_a.publish(site.prefix(A) + "marker", marker)

    assert refused == dict.fromkeys(refused, True)
    assert peer_a.wait_for(marker) == [marker]  # the marker came, the secret did not


def test_an_instance_cannot_publish_into_another_instances_prefix(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, bob = _owners()
    url_a, url_b = site.provision(A, alice), site.provision(B, bob)
    platform = connect(site.platform_url)
    assert platform.subscribe("dtaas/#")
    peer_a, peer_b = connect(url_a), connect(url_b)
    assert peer_b.subscribe(site.prefix(B) + "#")
    forged, marker = _token(), _token()

    peer_a.publish(site.prefix(B) + "telemetry", forged)
    peer_a.publish(f"dtaas/{bob}/{B}", forged)
    peer_a.publish("dtaas/health/forged", forged)
    peer_b.publish(site.prefix(B) + "marker", marker)

    assert peer_b.wait_for(marker) == [marker]
    assert platform.wait_for(marker) == [marker]


def test_an_instance_gets_no_retained_message_of_another_instance(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, bob = _owners()
    url_a, url_b = site.provision(A, alice), site.provision(B, bob)
    platform = connect(site.platform_url)
    assert platform.subscribe("dtaas/+/+/#")  # amqtt used to send A what matches this
    secret, marker = _token(), _token()
    connect(url_b).publish(site.prefix(B) + "state", secret, retain=True)
    platform.wait_for(secret)

    peer_a = connect(url_a)  # connects after the message was retained
    assert peer_a.subscribe(site.prefix(A) + "#")
    peer_a.publish(site.prefix(A) + "marker", marker)

    assert peer_a.wait_for(marker) == [marker]


def test_anonymous_clients_and_wrong_passwords_are_refused(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, bob = _owners()
    url_a, url_b = site.provision(A, alice), site.provision(B, bob)
    password_b = urlsplit(url_b).password or ""
    parts = urlsplit(url_a)
    address = f"{parts.hostname}:{parts.port}"
    never_provisioned = mqtt_names.with_credentials(
        url_a,
        mqtt_names.instance_username(site.settings, 3),
        mqtt_names.instance_password(site.settings, 3, alice),
    )
    platform_user = unquote(urlsplit(site.platform_url).username or "")

    attempts = {
        "anonymous": connect(url_a, anonymous=True),
        "A with B's password": connect(f"mqtt://{parts.username}:{password_b}@{address}"),
        "an instance never provisioned": connect(never_provisioned),
        "the platform with a wrong password": connect(f"mqtt://{platform_user}:nope@{address}"),
    }

    assert {name: peer.accepted for name, peer in attempts.items()} == dict.fromkeys(
        attempts, False
    )
    assert connect(url_a).accepted


def test_a_revoked_account_is_disconnected_and_refused(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, bob = _owners()
    url_a, url_b = site.provision(A, alice), site.provision(B, bob)
    peer_a = connect(url_a)
    assert peer_a.accepted and peer_a.subscribe(site.prefix(A) + "#")

    mqtt_accounts.revoke(site.settings, A)

    assert peer_a.dropped.wait(WAIT_SECONDS), "the revoked account's connection stayed open"
    assert not connect(url_a).accepted
    assert connect(url_b).accepted  # only A's account was revoked
    assert site.exists(A)  # revoked, not removed


def test_provisioning_a_revoked_account_again_enables_it(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, _bob = _owners()
    url_a = site.provision(A, alice)
    mqtt_accounts.revoke(site.settings, A)
    assert not connect(url_a).accepted

    again = site.provision(A, alice)  # e.g. the clean job of a terminated instance

    assert again == url_a
    assert connect(again).accepted


def test_a_dropped_account_is_removed_and_refused(site: Site, connect: Callable[..., Peer]) -> None:
    alice, _bob = _owners()
    url_a = site.provision(A, alice)
    peer_a = connect(url_a)
    existed = site.exists(A)

    mqtt_accounts.drop(site.settings, A)

    assert existed and not site.exists(A)
    assert peer_a.dropped.wait(WAIT_SECONDS), "the dropped account's connection stayed open"
    assert not connect(url_a).accepted


def test_a_job_never_gets_the_platforms_own_account(site: Site) -> None:
    alice, _bob = _owners()

    env = connection_env(site.settings, ["mqtt"], A, alice)
    url_a = site.provision(A, alice)

    assert "DTAAS_MQTT_URL" not in env
    assert env["DTAAS_TOPIC_PREFIX"] == f"dtaas/{alice}/{A}/"
    assert urlsplit(url_a).username == mqtt_names.instance_username(site.settings, A)
    assert urlsplit(url_a).username != urlsplit(site.platform_url).username
    assert urlsplit(url_a).password != urlsplit(site.platform_url).password


# --- the embedded broker: its account book outlives the process ------------------------------


@pytest.mark.parametrize("site", ["embedded"], indirect=True)
def test_a_revoked_account_stays_refused_after_a_platform_restart(
    site: Site, connect: Callable[..., Peer]
) -> None:
    alice, bob = _owners()
    url_a, url_b = site.provision(A, alice), site.provision(B, bob)
    mqtt_accounts.revoke(site.settings, A)

    site.restart()
    restarted = embedded.running_broker(site.settings)
    assert restarted is not None
    port = restarted.port

    assert not connect(_at_port(url_a, port)).accepted
    assert connect(_at_port(url_b, port)).accepted  # the book kept B's account too


def _at_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:{port}").geturl()


# --- when isolation is configured, no account means no job ---------------------------------


def test_the_embedded_broker_not_running_fails_provisioning(tmp_path: Path) -> None:
    laptop = _settings(tmp_path / "data", mqtt_url=None, embedded_mqtt=True)

    with pytest.raises(BackendUnavailable) as raised:
        mqtt_accounts.provision(laptop, A, "alice")

    assert raised.value.message.startswith(
        "The embedded MQTT broker is not running in this process, so the instance's MQTT "
        "account could not be made"
    )
    assert "DTAAS_MQTT_URL" not in connection_env(laptop, ["mqtt"], A, "alice")


def test_an_unreachable_dynsec_broker_fails_provisioning(tmp_path: Path) -> None:
    with closed_port() as port:
        settings = _settings(
            tmp_path / "data",
            mqtt_url=f"mqtt://admin:secret@127.0.0.1:{port}",
            mqtt_dynsec=True,
            embedded_mqtt=False,
        )
        with pytest.raises(BackendUnavailable) as raised:
            mqtt_accounts.provision(settings, A, "alice")

    assert raised.value.message.startswith(f"The MQTT broker at 127.0.0.1:{port} is unreachable")
    assert "secret" not in raised.value.message


def test_a_dynsec_admin_with_a_wrong_password_fails_provisioning(
    tmp_path: Path, dynsec_mosquitto: Mosquitto
) -> None:
    wrong = dynsec_mosquitto.admin_url.replace(dynsec_mosquitto.admin_password, "wrong-password")
    settings = _settings(tmp_path / "data", mqtt_url=wrong, mqtt_dynsec=True, embedded_mqtt=False)

    with pytest.raises(BackendUnavailable) as raised:
        mqtt_accounts.provision(settings, A, "alice")

    assert raised.value.message.startswith(
        f"The MQTT broker at 127.0.0.1:{dynsec_mosquitto.port} refused the platform's account "
        "(Not authorized); DTAAS_MQTT_DYNSEC needs DTAAS_MQTT_URL to name an admin"
    )
    assert "wrong-password" not in raised.value.message


def test_a_dynsec_url_whose_user_is_no_admin_fails_provisioning(
    tmp_path: Path, dynsec_mosquitto: Mosquitto
) -> None:
    admin = _settings(
        tmp_path / "admin",
        mqtt_url=dynsec_mosquitto.admin_url,
        mqtt_dynsec=True,
        embedded_mqtt=False,
    )
    not_admin = admin.model_copy(
        update={"mqtt_url": mqtt_accounts.provision(admin, A, _owners()[0])}
    )

    with pytest.raises(BackendUnavailable) as raised:
        mqtt_accounts.provision(not_admin, B, "bob")

    assert raised.value.message == (
        f"The MQTT broker at 127.0.0.1:{dynsec_mosquitto.port} does not let the platform's "
        "account subscribe to $CONTROL/dynamic-security/v1/response; DTAAS_MQTT_DYNSEC needs "
        "DTAAS_MQTT_URL to name an admin of Mosquitto's dynamic-security plugin "
        "(docs/services.md)."
    )


def test_dynsec_settings_need_an_admin_in_the_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mqtt_dynsec is set but mqtt_url carries no user"):
        _settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1883", mqtt_dynsec=True)
    with pytest.raises(ValueError, match="mqtt_dynsec is set but mqtt_url is not"):
        _settings(tmp_path, mqtt_dynsec=True)


def test_an_anonymous_broker_isolates_nothing_and_jobs_get_its_url(tmp_path: Path) -> None:
    shared = _settings(tmp_path / "data", mqtt_url="mqtt://127.0.0.1:1883", embedded_mqtt=False)

    assert mqtt_accounts.provision(shared, A, "alice") is None
    assert connection_env(shared, ["mqtt"], A, "alice")["DTAAS_MQTT_URL"] == shared.mqtt_url


# --- a dynsec admin gets the platform's role on dtaas/# --------------------------------------


def test_prepare_lets_a_fresh_dynsec_admin_pass_the_health_check(tmp_path: Path) -> None:
    mosquitto = start_dynsec_mosquitto(tmp_path / "mosquitto")
    try:
        settings = _settings(
            tmp_path / "data", mqtt_url=mosquitto.admin_url, mqtt_dynsec=True, embedded_mqtt=False
        )
        target = Target(name="mqtt", kind=ServiceKind.MQTT, url=mosquitto.admin_url)
        before = run_check(target, timeout=1.0)

        mqtt_accounts.prepare(settings)
        after = run_check(target, timeout=2.0)
        mqtt_accounts.prepare(settings)  # a second start changes nothing
        again = run_check(target, timeout=2.0)
    finally:
        mosquitto.stop()

    # `mosquitto_ctrl dynsec init` makes an admin that may publish nowhere but $CONTROL.
    assert before.status == HealthStatus.DOWN
    assert (after.status, again.status) == (HealthStatus.UP, HealthStatus.UP), after.error


def test_the_app_gives_its_dynsec_admin_the_platform_role_at_start(
    settings: Settings, session: Session, admin: User, tmp_path: Path
) -> None:
    mosquitto = start_dynsec_mosquitto(tmp_path / "mosquitto")
    try:
        site = settings.model_copy(
            update={"mqtt_url": mosquitto.admin_url, "mqtt_dynsec": True, "embedded_mqtt": False}
        )
        app = create_app(site)

        def test_session() -> Iterator[Session]:
            yield session

        app.dependency_overrides[db.get_session] = test_session
        headers = bearer(session, site, admin)
        with TestClient(app, base_url="http://127.0.0.1") as client:
            listed = client.post("/api/v1/services/mqtt/check", headers=headers)
    finally:
        mosquitto.stop()

    assert listed.status_code == 200, listed.text
    assert listed.json()["url"] == f"mqtt://{ADMIN}@127.0.0.1:{mosquitto.port}"
    assert listed.json()["health"]["status"] == "up", listed.json()["health"]
