"""A job gets the connection settings of the platform services its manifest asks for."""

from __future__ import annotations

import json
import shutil
import threading
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.lifecycle import service
from dtaas.services import isolation
from tests.conftest import POSTGRES_ADMIN_URL
from tests.factories import bearer, make_user
from tests.lifecycle.conftest import bound_sessions, write_twin
from tests.lifecycle.test_routes import finish, new_instance, queue_phase, read_log
from tests.lifecycle.test_snapshots import EXAMPLE

MOSQUITTO = "mqtt://127.0.0.1:1883"
PUBLISHER = """#!/bin/bash
set -e
echo "prefix=$DTAAS_TOPIC_PREFIX"
echo "mqtt=$DTAAS_MQTT_URL"
echo "amqp=${DTAAS_AMQP_URL:-none}"
mosquitto_pub -L "$DTAAS_MQTT_URL/${DTAAS_TOPIC_PREFIX}telemetry" -m '{"x": 1.5}' -q 1
"""
MANIFEST = "manifest: 1\nname: publisher\nservices: [mqtt]\n"


@pytest.fixture
def mqtt_user(session: Session, settings) -> tuple[str, dict[str, str]]:
    """A user of this test alone: the machine's broker is shared by parallel tests, whose
    instance ids repeat, so the topic must be unique by its user."""
    name = f"m{uuid.uuid4().hex[:10]}"
    return name, bearer(session, settings, make_user(session, settings, username=name))


def test_a_job_publishes_on_its_instances_topic_with_the_url_it_was_given(
    client: TestClient, session: Session, make_driver, settings, mqtt_user
):
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    owner, as_owner = mqtt_user
    driver = make_driver(mqtt_url=MOSQUITTO)
    twin = write_twin(
        settings,
        f"{owner}/digital_twins/pub-{uuid.uuid4().hex[:6]}",
        {"execute": PUBLISHER},
        {"dt.yaml": MANIFEST},
    )
    instance_id = new_instance(client, as_owner, twin)
    received: list[tuple[str, dict[str, float]]] = []
    subscribed = threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_subscribe = lambda *_args: subscribed.set()
    listener.on_message = lambda _c, _u, message: received.append(
        (message.topic, json.loads(message.payload))
    )
    listener.connect("127.0.0.1", 1883)
    listener.subscribe(f"dtaas/{owner}/{instance_id}/#", qos=1)
    listener.loop_start()
    try:
        assert subscribed.wait(5), "the test's subscription was not acknowledged"
        job = finish(
            driver, client, as_owner, queue_phase(client, as_owner, instance_id, "execute")
        )
        driver.run_until(lambda: received, message="the job's message")
    finally:
        listener.loop_stop()
        listener.disconnect()

    assert job["state"] == "succeeded", read_log(client, as_owner, job["id"], "stderr")
    assert read_log(client, as_owner, job["id"]).splitlines() == [
        f"prefix=dtaas/{owner}/{instance_id}/",
        f"mqtt={MOSQUITTO}",
        "amqp=none",
    ]
    assert received == [(f"dtaas/{owner}/{instance_id}/telemetry", {"x": 1.5})]


def test_the_example_simulation_publishes_telemetry_and_plots_its_results(
    client: TestClient, session: Session, make_driver, settings, mqtt_user
):
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    owner, as_owner = mqtt_user
    driver = make_driver(mqtt_url=MOSQUITTO)
    twin = f"{owner}/digital_twins/oscillator"
    shutil.copytree(EXAMPLE, settings.resolved_files_dir / twin)
    instance_id = new_instance(client, as_owner, twin, values={"steps": 50, "step_delay": 0.0})
    points: list[dict[str, float]] = []
    subscribed = threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_subscribe = lambda *_args: subscribed.set()
    listener.on_message = lambda _c, _u, message: points.append(json.loads(message.payload))
    listener.connect("127.0.0.1", 1883)
    listener.subscribe(f"dtaas/{owner}/{instance_id}/telemetry", qos=0)
    listener.loop_start()
    try:
        assert subscribed.wait(5), "the test's subscription was not acknowledged"
        job = finish(
            driver, client, as_owner, queue_phase(client, as_owner, instance_id, "execute")
        )
        driver.run_until(lambda: len(points) >= 50, message="50 telemetry points")
    finally:
        listener.loop_stop()
        listener.disconnect()
    results = service.instance_dir(settings, instance_id) / "dt" / "results"

    assert job["state"] == "succeeded", read_log(client, as_owner, job["id"], "stderr")
    assert f"telemetry: publishing to dtaas/{owner}/{instance_id}/telemetry" in read_log(
        client, as_owner, job["id"]
    )
    assert [round(p["t"], 6) for p in points] == [round(0.01 * i, 6) for i in range(1, 51)]
    assert set(points[0]) == {"t", "x", "v"}
    rows = (results / "trajectory.csv").read_text().splitlines()
    assert len(rows) == 51 and rows[0] == "step,t,x,v"
    assert float(rows[-1].split(",")[2]) == points[-1]["x"]
    svg = (results / "trajectory.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 2


def test_a_job_gets_its_own_postgres_schema_which_clean_drops(
    client: TestClient, session: Session, make_driver, settings, as_alice, monkeypatch
):
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    monkeypatch.setattr(settings, "postgres_url", POSTGRES_ADMIN_URL)  # the API's and the jobs'
    driver = make_driver()
    writer = (
        "#!/bin/bash\nset -e\n"
        'psql "$DTAAS_POSTGRES_URL" -qAtc "CREATE TABLE readings (v float); '
        "INSERT INTO readings VALUES (2.5); SELECT current_user, current_schema, sum(v) "
        'FROM readings"\n'
    )
    twin = write_twin(
        settings,
        "alice/digital_twins/db-writer",
        {"execute": writer},
        {"dt.yaml": "manifest: 1\nname: db-writer\nservices: [postgres]\n"},
    )
    instance_id = new_instance(client, as_alice, twin)
    job = finish(driver, client, as_alice, queue_phase(client, as_alice, instance_id, "execute"))
    role = isolation.role_name(driver.supervisor.settings, instance_id)
    cleaned = client.post(f"/api/v1/instances/{instance_id}/clean", headers=as_alice)
    with psycopg.connect(POSTGRES_ADMIN_URL.replace("+psycopg", ""), autocommit=True) as admin:
        left = admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone()

    assert job["state"] == "succeeded", read_log(client, as_alice, job["id"], "stderr")
    assert read_log(client, as_alice, job["id"]) == f"{role}|{role}|2.5\n"
    assert cleaned.status_code == 202
    assert left == (0,)
