"""The app runs the telemetry subscriber where it runs the supervisor, and its counters are
on /metrics."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient

from dtaas.api.app import create_app
from dtaas.security.models import Role
from tests.execution.processes import wait_until
from tests.factories import bearer, make_user
from tests.services.support import MOSQUITTO_URL
from tests.services.telemetry.conftest import Publisher, Site, topic_of, wait_for_points


def _admin_headers(site: Site) -> dict[str, str]:
    with site.sessions() as session:
        name = f"admin{uuid.uuid4().hex[:10]}"
        admin = make_user(session, site.settings, username=name, role=Role.ADMIN)
        headers = bearer(session, site.settings, admin)
        session.commit()
        return headers


def _metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_the_supervisor_process_ingests_and_counts_on_metrics(site: Site) -> None:
    owner = site.new_user()
    instance_id = site.new_instance(owner)
    headers = _admin_headers(site)
    app = create_app(site.settings.model_copy(update={"supervisor": True}))
    publisher = Publisher(MOSQUITTO_URL)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:

            def stored() -> float | None:
                publisher.send(topic_of(owner, instance_id), {"x": 1.0})  # until subscribed
                text = client.get("/metrics", headers=headers).text
                return _metric(text, "dtaas_telemetry_points_stored_total")

            wait_until(stored, timeout=15, message="points counted on /metrics")
            text = client.get("/metrics", headers=headers).text
    finally:
        publisher.close()

    assert wait_for_points(site, instance_id, 1) >= 1
    assert _metric(text, 'dtaas_telemetry_messages_total{outcome="stored"}') is not None
    assert _metric(text, "dtaas_telemetry_queue_messages") is not None


def test_without_the_supervisor_there_is_no_subscriber(site: Site) -> None:
    headers = _admin_headers(site)
    app = create_app(site.settings)  # supervisor=False, as for a second API process

    with TestClient(app, base_url="http://127.0.0.1") as client:
        text = client.get("/metrics", headers=headers).text

    assert "dtaas_telemetry" not in text


def test_a_second_process_of_the_site_does_not_subscribe_too(site: Site) -> None:
    headers = _admin_headers(site)
    settings = site.settings.model_copy(update={"supervisor": True})

    with (
        TestClient(create_app(settings), base_url="http://127.0.0.1") as first,
        TestClient(create_app(settings), base_url="http://127.0.0.1") as second,
    ):
        first_metrics = first.get("/metrics", headers=headers).text
        second_metrics = second.get("/metrics", headers=headers).text

    assert "dtaas_telemetry_points_stored_total" in first_metrics
    assert "dtaas_telemetry" not in second_metrics  # the supervisor's lock was taken
