"""The client's services methods against a real server and the machine's Mosquitto."""

from __future__ import annotations

import socket

import pytest

from dtaas.client import Client
from dtaas.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from dtaas.services.models import HealthStatus
from dtaas.services.schemas import ServiceRead
from tests.live import LiveServer
from tests.services.support import MOSQUITTO_URL


@pytest.fixture
def root(live: LiveServer) -> Client:
    return live.client_for("root")


def test_an_admin_registers_and_lists_a_service_with_its_health(root: Client) -> None:
    with root:
        created = root.register_service(
            name="site-mosquitto", kind="mqtt", url=MOSQUITTO_URL, description="Plant floor"
        )
        listed = root.list_services()

    assert isinstance(created, ServiceRead)
    assert (created.source, created.description, created.has_password) == (
        "registered",
        "Plant floor",
        False,
    )
    assert [service.name for service in listed] == ["site-mosquitto"]
    assert listed[0].health.status == HealthStatus.UP, listed[0].health.error


def test_check_service_reports_a_refused_port_as_down(root: Client) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        url = f"amqp://127.0.0.1:{bound.getsockname()[1]}/"
        with root:
            root.register_service(name="gone", kind="amqp", url=url, password="pw-12345")
            checked = root.check_service(name="gone")

    assert checked.health.status == HealthStatus.DOWN
    assert checked.health.error == "connection refused: nothing listens at that address"
    assert checked.has_password is True


def test_errors_come_back_as_their_classes(live: LiveServer, root: Client) -> None:
    with root:
        root.register_service(name="site-mosquitto", kind="mqtt", url=MOSQUITTO_URL)
        with pytest.raises(Conflict, match="already exists"):
            root.register_service(name="site-mosquitto", kind="mqtt", url=MOSQUITTO_URL)
        with pytest.raises(InvalidInput, match="mqtt URLs start with mqtt:// or mqtts://"):
            root.register_service(name="web", kind="mqtt", url="http://127.0.0.1/")
        with pytest.raises(NotFound):
            root.check_service(name="nothing-here")
    with live.client_for("alice") as alice:
        with pytest.raises(PermissionDenied, match="manage_services"):
            alice.register_service(name="mine", kind="mqtt", url=MOSQUITTO_URL)
        assert [s.name for s in alice.list_services()] == ["site-mosquitto"]


def test_delete_service_removes_it(root: Client) -> None:
    with root:
        root.register_service(name="site-mosquitto", kind="mqtt", url=MOSQUITTO_URL)
        root.delete_service(name="site-mosquitto")
        with pytest.raises(NotFound):
            root.get_service(name="site-mosquitto")
