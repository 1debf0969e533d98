"""Per-instance RabbitMQ vhosts and users, on a private node with the management API."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pika
import pika.exceptions
import pytest
from pydantic import ValidationError

from dtaas.config import Settings
from dtaas.errors import BackendUnavailable
from dtaas.services import accounts, amqp_accounts
from dtaas.services import service as services
from tests.execution.processes import wait_until
from tests.execution.ray_head import free_ports
from tests.rabbitmq import RabbitNode

pytestmark = pytest.mark.xdist_group("rabbitmq")


@pytest.fixture
def site(tmp_path: Path, rabbitmq_node: RabbitNode) -> Iterator[Settings]:
    settings = Settings(
        data_dir=tmp_path / "data",
        secret_key="test-secret-key-not-for-production",
        amqp_url=rabbitmq_node.amqp_url,
        amqp_management_url=rabbitmq_node.management_url,
        demo=False,
    )
    yield settings
    for instance_id in (1, 2):
        amqp_accounts.drop(settings, instance_id)


def connect(url: str) -> pika.BlockingConnection:
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = 5
    return pika.BlockingConnection(parameters)


def with_vhost(url: str, vhost: str) -> str:
    """``url``'s user and password on another vhost."""
    return urlsplit(url)._replace(path="/" + quote(vhost, safe="")).geturl()


def closed_by_broker(connection: pika.BlockingConnection) -> Exception | None:
    """The broker's reason once it has closed ``connection``; None while it is open."""
    try:
        connection.process_data_events(time_limit=0.05)
    except pika.exceptions.ConnectionClosedByBroker as exc:
        reason: Exception = exc  # pika ships no types
        return reason
    return None


def test_an_instance_cannot_read_another_instances_queues(site, rabbitmq_node):
    first = amqp_accounts.provision(site, 1, "alice")
    second = amqp_accounts.provision(site, 2, "bob")
    assert first is not None and second is not None
    with connect(second) as connection:
        channel = connection.channel()
        channel.queue_declare("b.readings")
        channel.basic_publish("", "b.readings", b"b-secret")

    vhost_b = amqp_accounts.account_name(site, 2)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as into_b:
        connect(with_vhost(first, vhost_b))
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as into_default:
        connect(with_vhost(first, "/"))
    with connect(first) as connection:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as not_in_a:
            channel.queue_declare("b.readings", passive=True)
    first_user = urlsplit(first)
    management = httpx.get(
        f"http://127.0.0.1:{rabbitmq_node.management_port}/api/queues",
        auth=(first_user.username or "", first_user.password or ""),
        timeout=5,
    )
    with connect(second) as connection:
        kept = connection.channel().basic_get("b.readings", auto_ack=True)[2]

    assert f"(530) \"NOT_ALLOWED - access to vhost '{vhost_b}' refused" in str(into_b.value)
    assert "(530) \"NOT_ALLOWED - access to vhost '/' refused" in str(into_default.value)
    assert not_in_a.value.reply_code == 404  # A's vhost has no such queue
    assert management.status_code == 401  # no tags: no management API either
    assert kept == b"b-secret"


def test_an_instance_declares_publishes_and_consumes_in_its_own_vhost(site):
    url = amqp_accounts.provision(site, 1, "alice")
    assert url is not None
    received: list[bytes] = []
    with connect(url) as connection:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare("plant", exchange_type="topic")
        channel.queue_declare("temperatures", durable=True)
        channel.queue_bind("temperatures", "plant", routing_key="sensor.#")
        channel.basic_publish("plant", "sensor.t1", b"21.5")
        channel.basic_publish("plant", "sensor.t2", b"22.0")

        def keep(ch, method, _properties, body: bytes) -> None:
            received.append(body)
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume("temperatures", keep)
        wait_until(
            lambda: connection.process_data_events(time_limit=0.05) or len(received) == 2,
            timeout=10,
            message="both messages delivered",
        )
        channel.queue_delete("temperatures")
        channel.exchange_delete("plant")

    assert received == [b"21.5", b"22.0"]
    assert urlsplit(url).path == "/" + amqp_accounts.account_name(site, 1)


def test_revoke_closes_open_connections_and_refuses_logins_but_keeps_the_queues(
    site, rabbitmq_node
):
    url = amqp_accounts.provision(site, 1, "alice")
    assert url is not None
    connection = connect(url)
    channel = connection.channel()
    channel.queue_declare("kept")
    channel.basic_publish("", "kept", b"still here")

    amqp_accounts.revoke(site, 1)
    reason = wait_until(
        lambda: closed_by_broker(connection), timeout=10, message="the connection closed"
    )
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        connect(url)
    name = amqp_accounts.account_name(site, 1)
    queue = rabbitmq_node.api("GET", f"/queues/{name}/kept")

    assert isinstance(reason, pika.exceptions.ConnectionClosedByBroker)
    assert reason.reply_code == 320
    assert f"user '{name}' is deleted" in reason.reply_text
    assert queue.status_code == 200


def test_provisioning_again_after_revoke_gives_back_the_same_queues(site):
    url = amqp_accounts.provision(site, 1, "alice")
    assert url is not None
    with connect(url) as connection:
        channel = connection.channel()
        channel.queue_declare("work")
        channel.basic_publish("", "work", b"from the first run")
    amqp_accounts.revoke(site, 1)

    again = amqp_accounts.provision(site, 1, "alice")
    assert again is not None
    with connect(again) as connection:
        body = connection.channel().basic_get("work", auto_ack=True)[2]

    assert again == url
    assert body == b"from the first run"


def test_provisioning_for_another_job_keeps_open_connections(site):
    url = amqp_accounts.provision(site, 1, "alice")
    assert url is not None
    with connect(url) as connection:
        channel = connection.channel()
        channel.queue_declare("shared")

        assert amqp_accounts.provision(site, 1, "alice") == url
        channel.basic_publish("", "shared", b"after")
        body = channel.basic_get("shared", auto_ack=True)[2]

    assert body == b"after"


def test_a_reused_instance_id_of_another_owner_gets_an_empty_vhost(site, rabbitmq_node, caplog):
    url = amqp_accounts.provision(site, 1, "alice")
    assert url is not None
    with connect(url) as connection:
        connection.channel().queue_declare("alices")
    # alice's instance 1 was deleted, but its vhost could not be dropped; SQLite then gives
    # bob's new instance the same id.

    with caplog.at_level(logging.WARNING, logger="dtaas.services.amqp_accounts"):
        again = amqp_accounts.provision(site, 1, "bob")
    name = amqp_accounts.account_name(site, 1)
    queue = rabbitmq_node.api("GET", f"/queues/{name}/alices")
    vhost = rabbitmq_node.api("GET", f"/vhosts/{name}").json()

    assert again == url  # the same account name, on a vhost made afresh
    assert queue.status_code == 404
    assert vhost["description"] == "dtaas instance 1 of bob"
    assert [record.getMessage() for record in caplog.records] == [
        "amqp vhost of a deleted instance dropped instance_id=1"
    ]


def test_drop_deletes_the_user_and_the_vhost_with_its_queues(site, rabbitmq_node):
    url = amqp_accounts.provision(site, 1, "alice")
    assert url is not None
    connection = connect(url)
    connection.channel().queue_declare("doomed")
    name = amqp_accounts.account_name(site, 1)

    amqp_accounts.drop(site, 1)
    amqp_accounts.drop(site, 1)  # again: nothing left, nothing raised
    reason = wait_until(
        lambda: closed_by_broker(connection), timeout=10, message="the connection closed"
    )

    assert isinstance(reason, pika.exceptions.ConnectionClosedByBroker)
    assert rabbitmq_node.api("GET", f"/users/{name}").status_code == 404
    assert rabbitmq_node.api("GET", f"/vhosts/{name}").status_code == 404


def test_the_vhost_says_whose_instance_it_is(site, rabbitmq_node):
    amqp_accounts.provision(site, 2, "bob")
    name = amqp_accounts.account_name(site, 2)

    vhost = rabbitmq_node.api("GET", f"/vhosts/{name}").json()
    user = rabbitmq_node.api("GET", f"/users/{name}").json()
    permissions = rabbitmq_node.api("GET", f"/users/{name}/permissions").json()

    assert vhost["description"] == "dtaas instance 2 of bob"
    assert user["tags"] in ("", [])  # no management access
    assert [(p["vhost"], p["configure"], p["write"], p["read"]) for p in permissions] == [
        (name, ".*", ".*", ".*")
    ]


def test_an_unreachable_management_api_fails_the_job_saying_why(site, caplog):
    (closed,) = free_ports(1)
    broken = site.model_copy(
        update={"amqp_management_url": f"http://admin:hunter2@127.0.0.1:{closed}"}
    )

    with pytest.raises(BackendUnavailable) as refused:
        amqp_accounts.provision(broken, 1, "alice")
    with caplog.at_level(logging.ERROR, logger="dtaas.services.amqp_accounts"):
        amqp_accounts.revoke(broken, 1)
        amqp_accounts.drop(broken, 1)

    assert refused.value.message.startswith(
        f"RabbitMQ's management API at http://127.0.0.1:{closed} did not answer (cannot connect"
    )
    assert "check DTAAS_AMQP_MANAGEMENT_URL" in refused.value.message
    assert "hunter2" not in refused.value.message
    assert [record.getMessage() for record in caplog.records] == [
        "amqp login not revoked instance_id=1",
        "amqp vhost not dropped instance_id=1",
    ]


def test_wrong_management_credentials_fail_the_job_saying_why(site, rabbitmq_node):
    wrong = site.model_copy(
        update={
            "amqp_management_url": f"http://dtaas-test-admin:wrong@127.0.0.1:"
            f"{rabbitmq_node.management_port}"
        }
    )

    with pytest.raises(BackendUnavailable) as refused:
        accounts.provision(wrong, instance_id=1, owner="alice", kinds=["amqp"])

    assert refused.value.message == (
        f"RabbitMQ's management API at http://127.0.0.1:{rabbitmq_node.management_port} "
        "refused the platform's credentials (HTTP 401): check the user and password in "
        "DTAAS_AMQP_MANAGEMENT_URL; the user needs the administrator tag"
    )


def test_without_a_management_api_jobs_share_the_configured_account(tmp_path):
    shared = "amqp://guest:guest@127.0.0.1:5672/"
    settings = Settings(data_dir=tmp_path, secret_key="k" * 32, amqp_url=shared, demo=False)

    own = accounts.provision(settings, instance_id=1, owner="alice", kinds=["amqp"])
    env = services.connection_env(settings, ["amqp"], 1, "alice")

    assert amqp_accounts.provision(settings, 1, "alice") is None
    assert own == {}
    assert env["DTAAS_AMQP_URL"] == shared


def test_a_management_url_that_is_not_http_is_refused_with_a_sentence(tmp_path):
    with pytest.raises(ValidationError, match="must be the HTTP address of RabbitMQ's manage"):
        Settings(data_dir=tmp_path, amqp_management_url="amqp://admin:x@127.0.0.1:5672/")


def test_the_instance_url_keeps_the_brokers_scheme_address_and_options(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        secret_key="k" * 32,
        amqp_url="amqps://platform:secret@broker.example:5671/%2F?heartbeat=30",
        amqp_management_url="https://admin:x@broker.example:15671",
        demo=False,
    )
    name = amqp_accounts.account_name(settings, 7)

    parts = urlsplit(amqp_accounts.instance_url(settings, 7))

    assert (parts.scheme, parts.hostname, parts.port) == ("amqps", "broker.example", 5671)
    assert (parts.username, parts.path, parts.query) == (name, f"/{name}", "heartbeat=30")
    assert parts.password not in (None, "", "secret")
