"""A job on a laptop (the embedded broker) gets an MQTT account of its instance's own:
the supervisor hands it a URL with the instance's user, confined to the instance's prefix,
and terminating the instance revokes it. Per broker: tests/services/test_mqtt_isolation.py.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.services import broker as embedded
from dtaas.services import mqtt_names
from tests.factories import bearer, make_user
from tests.lifecycle.conftest import Driver, bound_sessions, write_twin
from tests.lifecycle.test_routes import finish, new_instance, queue_phase, read_log

WAIT_SECONDS = 5.0
PUBLISHER = """#!/bin/bash
set -e
echo "mqtt=$DTAAS_MQTT_URL"
mosquitto_pub -L "$DTAAS_MQTT_URL/${DTAAS_TOPIC_PREFIX}telemetry" -m '{"x": 2.5}' -q 1
"""
MANIFEST = "manifest: 1\nname: publisher\nservices: [mqtt]\n"


@pytest.fixture
def laptop(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The test's site as a laptop runs it: no mqtt_url, the embedded broker running.

    The settings object is changed in place, so the app (terminate) and the supervisor
    (made after this) both see it.
    """
    monkeypatch.setattr(settings, "mqtt_url", None)
    monkeypatch.setattr(settings, "embedded_mqtt", True)
    monkeypatch.setattr(settings, "embedded_mqtt_port", 0)
    broker = embedded.start_embedded_mqtt(settings)
    assert broker is not None, "the embedded broker did not start"
    try:
        yield settings
    finally:
        embedded.stop_embedded_mqtt(settings, broker)


def _client(url: str) -> tuple[mqtt.Client, threading.Event, list[ReasonCode]]:
    """A paho client signed in with ``url``'s credentials, and its CONNACK once answered."""
    parts = urlsplit(url)
    answered, reasons = threading.Event(), []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"e2e-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(unquote(parts.username or ""), unquote(parts.password or ""))
    client.reconnect_delay_set(min_delay=60, max_delay=60)

    def on_connect(_c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        reasons.append(reason)
        answered.set()

    client.on_connect = on_connect
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    return client, answered, reasons


def _may_subscribe(url: str, topic_filter: str) -> bool:
    """Whether ``url``'s account connects and the broker grants it ``topic_filter``."""
    client, answered, reasons = _client(url)
    granted: list[bool] = []
    subacked = threading.Event()

    def on_subscribe(_c: object, _u: object, _m: int, codes: list[ReasonCode], _p: object) -> None:
        granted.append(not any(code.is_failure for code in codes))
        subacked.set()

    client.on_subscribe = on_subscribe
    try:
        assert answered.wait(WAIT_SECONDS), "no CONNACK"
        if reasons[0].is_failure:
            return False
        client.subscribe(topic_filter, qos=1)
        assert subacked.wait(WAIT_SECONDS), "no SUBACK"
        return granted[0]
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_job_gets_its_instances_own_mqtt_account_which_terminate_revokes(
    client: TestClient, session: Session, make_driver: Callable[..., Driver], laptop: Settings
) -> None:
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    owner = f"m{uuid.uuid4().hex[:10]}"
    as_owner = bearer(session, laptop, make_user(session, laptop, username=owner))
    driver = make_driver()
    twin = write_twin(
        laptop, f"{owner}/digital_twins/pub", {"execute": PUBLISHER}, {"dt.yaml": MANIFEST}
    )
    instance_id = new_instance(client, as_owner, twin)
    platform_url = embedded.embedded_mqtt_url(laptop)
    assert platform_url is not None
    platform, answered, _reasons = _client(platform_url)
    received: list[tuple[str, dict[str, float]]] = []
    subscribed = threading.Event()
    platform.on_subscribe = lambda *_args: subscribed.set()
    platform.on_message = lambda _c, _u, message: received.append(
        (message.topic, json.loads(message.payload))
    )
    try:
        assert answered.wait(WAIT_SECONDS), "no CONNACK for the platform"
        platform.subscribe("dtaas/+/+/#", qos=1)
        assert subscribed.wait(WAIT_SECONDS), "the platform's subscription was not acknowledged"
        job = finish(
            driver, client, as_owner, queue_phase(client, as_owner, instance_id, "execute")
        )
        driver.run_until(lambda: received, message="the job's message at the platform")
    finally:
        platform.disconnect()
        platform.loop_stop()
    job_url = read_log(client, as_owner, job["id"]).splitlines()[0].removeprefix("mqtt=")
    job_user = urlsplit(job_url).username
    other_prefix = f"dtaas/{owner}/{instance_id + 1}/#"
    may_read_other = _may_subscribe(job_url, other_prefix)
    may_read_all = _may_subscribe(job_url, "dtaas/+/+/#")
    may_read_own = _may_subscribe(job_url, f"dtaas/{owner}/{instance_id}/#")

    terminated = client.post(f"/api/v1/instances/{instance_id}/terminate", headers=as_owner)

    assert job["state"] == "succeeded", read_log(client, as_owner, job["id"], "stderr")
    assert job_user == mqtt_names.instance_username(laptop, instance_id)
    assert job_user != mqtt_names.platform_username(laptop)
    assert urlsplit(job_url).password == mqtt_names.instance_password(laptop, instance_id, owner)
    assert received == [(f"dtaas/{owner}/{instance_id}/telemetry", {"x": 2.5})]
    assert (may_read_own, may_read_other, may_read_all) == (True, False, False)
    assert terminated.status_code == 202, terminated.text
    assert terminated.json()["state"] == "terminated"
    assert not _may_subscribe(job_url, f"dtaas/{owner}/{instance_id}/#")


def test_a_job_fails_saying_why_when_its_mqtt_account_cannot_be_made(
    client: TestClient,
    session: Session,
    make_driver: Callable[..., Driver],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    monkeypatch.setattr(settings, "mqtt_url", None)
    monkeypatch.setattr(settings, "embedded_mqtt", True)  # wanted, but not running here
    owner = f"m{uuid.uuid4().hex[:10]}"
    as_owner = bearer(session, settings, make_user(session, settings, username=owner))
    driver = make_driver()
    twin = write_twin(
        settings, f"{owner}/digital_twins/pub", {"execute": PUBLISHER}, {"dt.yaml": MANIFEST}
    )
    instance_id = new_instance(client, as_owner, twin)

    job = finish(driver, client, as_owner, queue_phase(client, as_owner, instance_id, "execute"))

    assert job["state"] == "failed"
    assert job["reason"].startswith(
        "the job could not start: The embedded MQTT broker is not running in this process, "
        "so the instance's MQTT account could not be made"
    )
    assert read_log(client, as_owner, job["id"]) == ""  # it never ran
