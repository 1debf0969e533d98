"""Fixtures of the telemetry tests: a site with a database of its own, instances, a broker.

Ingestion writes through its own connections and commits, as in production, so these
tests cannot run inside the rolled-back ``session`` of tests/conftest.py (on SQLite its
open transaction would hold the write lock the ingestor waits for). Each module gets a
fresh migrated database per backend instead; each test its own users, so nothing clashes.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from dtaas import db
from dtaas.config import Settings
from dtaas.library import service as library
from dtaas.lifecycle import service as lifecycle
from dtaas.security.models import Role
from dtaas.security.permissions import Principal
from dtaas.services import broker as embedded
from dtaas.services.telemetry import TelemetryIngestor
from tests.conftest import POSTGRES_ADMIN_URL
from tests.execution.processes import wait_until
from tests.factories import make_principal, make_user
from tests.live import write_twin_folder
from tests.services.support import MOSQUITTO_URL

SUBSCRIBE_SECONDS = 5.0
MANIFEST = """manifest: 1
name: Sensor
telemetry:
  - {field: x, unit: m, label: Position}
  - {field: v, unit: m/s}
outputs: [results/*.csv, results/*.md, results/**/*.png, notes.txt]
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site_database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database of the module's own, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('telemetry-db') / 'dtaas.db'}"
        _migrate(url, tmp_path_factory.mktemp("migrate"))
        yield url
        return
    schema = f"telemetry_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_ADMIN_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
        _migrate(url, tmp_path_factory.mktemp("migrate"))
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _migrate(url: str, data_dir: Path) -> None:
    engine = db.make_engine(Settings(data_dir=data_dir, database_url=url))
    try:
        db.upgrade(engine)
    finally:
        engine.dispose()


@dataclass
class Site:
    """A site's settings and database, with helpers that go through the real services."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def new_user(self, prefix: str = "u") -> Principal:
        """A user with a unique name (topics are shared with other tests on Mosquitto)."""
        with self.sessions() as session:
            user = make_user(
                session, self.settings, username=f"{prefix}{uuid.uuid4().hex[:12]}", role=Role.USER
            )
            session.commit()
            library.ensure_library(settings=self.settings, username=user.username)
            return make_principal(user)

    def new_instance(self, owner: Principal, *, manifest: str = MANIFEST) -> int:
        """An instance of a small DT in the owner's library."""
        name = f"sensor-{uuid.uuid4().hex[:8]}"
        write_twin_folder(
            self.settings.resolved_files_dir / owner.username / "digital_twins" / name,
            scripts={"execute": "#!/bin/sh\necho hi\n"},
            manifest=manifest,
        )
        with self.sessions() as session:
            instance = lifecycle.create_instance(
                session=session,
                settings=self.settings,
                actor=owner,
                twin_path=f"{owner.username}/digital_twins/{name}",
            )
            return instance.id

    def delete_instance(self, owner: Principal, instance_id: int) -> None:
        with self.sessions() as session:
            lifecycle.delete_instance(
                session=session, settings=self.settings, actor=owner, instance_id=instance_id
            )

    def count_points(self, instance_id: int) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM telemetry_point WHERE instance_id = :i"),
                    {"i": instance_id},
                ).scalar_one()
            )


@pytest.fixture
def site_settings(site_database: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=site_database,
        secret_key="test-secret-key-not-for-production",
        demo=False,
        log_level="WARNING",
        supervisor=False,
        embedded_mqtt=False,
        mqtt_url=MOSQUITTO_URL,
        telemetry_flush_seconds=0.1,
        sandbox="none",
    )


@pytest.fixture
def site(site_settings: Settings) -> Iterator[Site]:
    engine = db.make_engine(site_settings)
    try:
        yield Site(settings=site_settings, engine=engine, sessions=db.make_sessionmaker(engine))
    finally:
        engine.dispose()


@pytest.fixture(params=["mosquitto", "embedded"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The machine's Mosquitto (shared with other tests) or a private embedded broker, the
    latter with the platform's own account in the URL (it refuses anonymous clients)."""
    if request.param == "mosquitto":
        yield MOSQUITTO_URL
        return
    own = Settings(data_dir=tmp_path / "broker", embedded_mqtt_port=0, mqtt_url=None)
    running = embedded.start_embedded_mqtt(own)
    assert running is not None, "the embedded broker did not start"
    try:
        url = embedded.embedded_mqtt_url(own)
        assert url is not None
        yield url
    finally:
        embedded.stop_embedded_mqtt(own, running)


@pytest.fixture
def ingestor(site: Site, broker_url: str) -> Iterator[TelemetryIngestor]:
    """The platform's subscriber on ``broker_url``, subscribed before the test starts."""
    running = TelemetryIngestor(settings=site.settings, engine=site.engine, broker_url=broker_url)
    running.start()
    try:
        assert running.wait_subscribed(SUBSCRIBE_SECONDS), "the subscription was not acknowledged"
        yield running
    finally:
        running.stop()


class Publisher:
    """A paho client publishing with QoS 1, each message acknowledged by the broker."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}"
        )
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
        connected = threading.Event()
        self.client.on_connect = lambda *_args: connected.set()
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
        self.client.loop_start()
        assert connected.wait(SUBSCRIBE_SECONDS), f"could not connect to {url}"

    def send(self, topic: str, payload: bytes | str | dict[str, object]) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(SUBSCRIBE_SECONDS)
        assert info.is_published(), f"the broker did not acknowledge {topic}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker_url: str) -> Iterator[Publisher]:
    client = Publisher(broker_url)
    try:
        yield client
    finally:
        client.close()


def topic_of(owner: Principal, instance_id: int, rest: str = "telemetry") -> str:
    return f"dtaas/{owner.username}/{instance_id}/{rest}"


def wait_for_points(
    site: Site,
    instance_id: int,
    count: int,
    timeout: float = 30.0,
    ingestor: TelemetryIngestor | None = None,
) -> int:
    """Wait until the instance has at least ``count`` points stored; returns how many."""
    try:
        return wait_until(
            lambda: (n := site.count_points(instance_id)) >= count and n,
            timeout=timeout,
            message=f"{count} point(s) of instance {instance_id} stored",
        )
    except AssertionError as exc:
        if ingestor is None:
            raise
        raise AssertionError(f"{exc}; the ingestor counted {ingestor.counts()}") from None
