"""Jobs on RabbitMQ with per-instance isolation: a job gets its instance's own vhost and user,
and the example tank-thermostat DT runs its two processes over them.

On a private RabbitMQ node with the management API (tests/rabbitmq.py).
"""

from __future__ import annotations

import csv
import shutil
from itertools import pairwise
from typing import Any

import pika
import pika.exceptions
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.library.service import EXAMPLES_DIR
from dtaas.lifecycle import service
from dtaas.services import amqp_accounts
from tests.execution.processes import wait_until
from tests.execution.ray_head import free_ports
from tests.lifecycle.conftest import API, bound_sessions, write_twin
from tests.lifecycle.test_routes import finish, new_instance, queue_phase, read_log, state_of
from tests.rabbitmq import RabbitNode

pytestmark = pytest.mark.xdist_group("rabbitmq")

THERMOSTAT = EXAMPLES_DIR / "common" / "digital_twins" / "tank-thermostat"
ECHO = '#!/bin/sh\necho "amqp=$DTAAS_AMQP_URL"\n'
MANIFEST = "manifest: 1\nname: amqp-user\nservices: [amqp]\n"


@pytest.fixture
def isolated(settings: Settings, rabbitmq_node: RabbitNode, monkeypatch) -> Settings:
    """The site (the API's and the supervisor's) on the private node, isolating instances."""
    monkeypatch.setattr(settings, "amqp_url", rabbitmq_node.amqp_url)
    monkeypatch.setattr(settings, "amqp_management_url", rabbitmq_node.management_url)
    return settings


def connect(url: str) -> pika.BlockingConnection:
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return pika.BlockingConnection(parameters)


def test_a_job_gets_its_instances_own_amqp_account_which_terminate_revokes(
    client: TestClient, session: Session, make_driver, isolated, rabbitmq_node, as_alice
):
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    driver = make_driver()
    twin = write_twin(
        isolated, "alice/digital_twins/amqp-user", {"execute": ECHO}, {"dt.yaml": MANIFEST}
    )
    instance_id = new_instance(client, as_alice, twin)
    job = finish(driver, client, as_alice, queue_phase(client, as_alice, instance_id, "execute"))
    own = amqp_accounts.instance_url(isolated, instance_id)
    with connect(own) as connection:
        connection.channel().queue_declare("works")
    terminated = client.post(f"{API}/instances/{instance_id}/terminate", headers=as_alice)
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(own)
    cleaned = client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    name = amqp_accounts.account_name(isolated, instance_id)

    assert job["state"] == "succeeded", read_log(client, as_alice, job["id"], "stderr")
    assert read_log(client, as_alice, job["id"]) == f"amqp={own}\n"
    assert own.endswith(f"/{name}") and rabbitmq_node.password not in own
    assert terminated.status_code == 202 and cleaned.status_code == 202
    assert rabbitmq_node.api("GET", f"/vhosts/{name}").status_code == 404


def test_a_job_fails_rather_than_get_the_shared_account_when_isolation_fails(
    client: TestClient, session: Session, make_driver, isolated, as_alice
):
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    (closed,) = free_ports(1)
    driver = make_driver(amqp_management_url=f"http://admin:secret@127.0.0.1:{closed}")
    twin = write_twin(
        isolated, "alice/digital_twins/amqp-user", {"execute": ECHO}, {"dt.yaml": MANIFEST}
    )
    instance_id = new_instance(client, as_alice, twin)

    job = finish(driver, client, as_alice, queue_phase(client, as_alice, instance_id, "execute"))

    assert job["state"] == "failed"
    assert job["reason"].startswith(
        "the job could not start: RabbitMQ's management API at "
        f"http://127.0.0.1:{closed} did not answer (cannot connect"
    )
    assert "secret" not in job["reason"]


def heater_by_hysteresis(temperatures: list[float], low: float, high: float) -> list[int]:
    """What a thermostat holding [low, high] decides for each reading, starting off."""
    heater, decisions = False, []
    for temperature in temperatures:
        heater = True if temperature < low else False if temperature > high else heater
        decisions.append(int(heater))
    return decisions


def queue_stats(node: RabbitNode, vhost: str) -> dict[str, Any]:
    queues = node.api("GET", f"/queues/{vhost}").json()
    return {queue["name"]: queue.get("message_stats", {}).get("publish") for queue in queues}


def test_the_thermostat_example_controls_its_tank_over_its_own_vhost(
    client: TestClient, session: Session, make_driver, isolated, rabbitmq_node, as_alice
):
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    driver = make_driver()
    twin = "alice/digital_twins/thermostat"
    shutil.copytree(THERMOSTAT, isolated.resolved_files_dir / twin)
    values = {"steps": 150, "initial_temperature_c": 39.0, "step_delay": 0.0}
    instance_id = new_instance(client, as_alice, twin, values=values)

    job = finish(driver, client, as_alice, queue_phase(client, as_alice, instance_id, "execute"))
    assert job["state"] == "succeeded", read_log(client, as_alice, job["id"], "stderr")
    results = service.instance_dir(isolated, instance_id) / "dt" / "results" / "tank.csv"
    with results.open() as handle:
        rows = list(csv.DictReader(handle))
    name = amqp_accounts.account_name(isolated, instance_id)
    queues = {f"tank-{instance_id}.temperature": 150, f"tank-{instance_id}.heater": 150}
    # The broker's own counts: every reading and every command went through the vhost.
    wait_until(
        lambda: queue_stats(rabbitmq_node, name) == queues,
        timeout=15,
        message="the broker counting 150 messages on each of the DT's queues",
    )
    in_default_vhost = queue_stats(rabbitmq_node, "%2F")
    temperatures = [float(row["temperature_c"]) for row in rows]
    heaters = [int(row["heater"]) for row in rows]
    in_band = temperatures[next(i for i, t in enumerate(temperatures) if t >= 39.5) :]
    switches = sum(1 for before, after in pairwise(heaters) if before != after)

    log = read_log(client, as_alice, job["id"])
    assert f"tank: connected to RabbitMQ as {name}, vhost {name}" in log
    assert "thermostat: done" in log and "tank: 150 steps done" in log
    assert [float(row["time_s"]) for row in rows] == [60.0 * step for step in range(150)]
    assert heaters == heater_by_hysteresis(temperatures, 39.5, 40.5)  # the commands came back
    assert heaters[0] == 1 and switches >= 3  # on, off as it passes the band, on again...
    assert min(in_band) > 39.3 and max(in_band) < 40.7  # within a step's change of the band
    assert not set(queues) & set(in_default_vhost)

    cleaned = client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    driver.run_until(lambda: state_of(client, as_alice, instance_id) == "cleaned")
    assert cleaned.status_code == 202
    assert rabbitmq_node.api("GET", f"/vhosts/{name}").status_code == 404
