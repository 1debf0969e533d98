"""The catalogue on both database backends: platform services from settings, registered
services with encrypted passwords, validation, permissions and the jobs' environment."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from dtaas.security.models import User
from dtaas.services import registry
from dtaas.services import service as services
from dtaas.services.credentials import UNDECRYPTABLE, decrypt_password
from dtaas.services.health import HealthMonitor
from dtaas.services.models import HealthStatus
from dtaas.services.registry import KEEP
from dtaas.services.schemas import ServiceRead
from dtaas.services.service import connection_env, public_url
from tests.factories import make_principal
from tests.services.support import closed_port, url_at

PASSWORD = "s3cret-broker-passw0rd"


def _register(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User, **over: str | None
) -> ServiceRead:
    values: dict[str, str | None] = {
        "name": "plant-rabbit",
        "kind": "amqp",
        "url": "amqp://127.0.0.1:5672/",
        "username": "guest",
        "password": "guest",
        "description": "The plant's RabbitMQ",
    }
    values.update(over)
    return registry.register_service(
        session=session,
        settings=settings,
        actor=make_principal(admin),
        monitor=monitor,
        name=str(values["name"]),
        kind=str(values["kind"]),
        url=str(values["url"]),
        username=values["username"],
        password=values["password"],
        description=str(values["description"]),
    )


def _raw_row(session: Session, name: str) -> dict[str, object]:
    row = session.execute(
        text("SELECT * FROM registered_service WHERE name = :name"), {"name": name}
    ).mappings()
    return dict(row.one())


# --- the platform's services ---------------------------------------------------------------


def test_platform_services_come_from_settings_and_are_up(
    session: Session, settings: Settings, monitor: HealthMonitor, viewer: User
) -> None:
    listed = services.list_services(
        session=session, settings=settings, actor=make_principal(viewer), monitor=monitor
    )

    assert [(s.name, s.kind.value, s.source) for s in listed] == [
        ("mqtt", "mqtt", "settings"),
        ("amqp", "amqp", "settings"),
        ("postgres", "postgres", "settings"),
    ]
    assert {s.name: s.health.status for s in listed} == dict.fromkeys(
        ["mqtt", "amqp", "postgres"], HealthStatus.UP
    )
    assert {s.name: s.env_var for s in listed} == {
        "mqtt": "DTAAS_MQTT_URL",
        "amqp": "DTAAS_AMQP_URL",
        "postgres": "DTAAS_POSTGRES_URL",
    }


def test_a_settings_url_is_shown_without_its_password(
    session: Session, settings: Settings, monitor: HealthMonitor, viewer: User
) -> None:
    amqp = services.get_service(
        session=session,
        settings=settings,
        actor=make_principal(viewer),
        monitor=monitor,
        name="amqp",
        check=False,
    )

    assert amqp.url == "amqp://guest@127.0.0.1:5672/"
    assert amqp.username == "guest"
    assert amqp.has_password is True
    assert amqp.health.status == HealthStatus.UNKNOWN


def test_listing_without_checks_shows_cached_health_only(
    session: Session, settings: Settings, monitor: HealthMonitor, viewer: User
) -> None:
    actor = make_principal(viewer)
    services.check_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name="mqtt"
    )

    listed = services.list_services(
        session=session, settings=settings, actor=actor, monitor=monitor, check=False
    )

    assert {s.name: s.health.status for s in listed} == {
        "mqtt": HealthStatus.UP,
        "amqp": HealthStatus.UNKNOWN,
        "postgres": HealthStatus.UNKNOWN,
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "amqp://guest@127.0.0.1:5672/"),
        ("postgresql://:only-password@db:5432/x", "postgresql://db:5432/x"),
        ("mqtt://127.0.0.1:1883", "mqtt://127.0.0.1:1883"),
    ],
)
def test_public_url_drops_only_the_password(url: str, shown: str) -> None:
    assert public_url(url) == shown


# --- registered services -------------------------------------------------------------------


def test_a_registered_password_is_encrypted_at_rest(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    created = _register(session, settings, monitor, admin, password=PASSWORD)

    row = _raw_row(session, "plant-rabbit")
    stored = str(row["password_encrypted"])
    assert PASSWORD not in stored
    assert PASSWORD not in str(row)
    assert decrypt_password(settings, stored) == PASSWORD
    assert created.has_password is True
    assert "password" not in created.model_dump()


def test_a_registered_service_is_checked_with_its_decrypted_credentials(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(session, settings, monitor, admin)

    checked = services.check_service(
        session=session,
        settings=settings,
        actor=make_principal(admin),
        monitor=monitor,
        name="plant-rabbit",
    )

    assert checked.source == "registered"
    assert checked.health.status == HealthStatus.UP, checked.health.error
    assert checked.env_var is None


def test_a_password_from_another_secret_key_is_reported_not_used(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(session, settings, monitor, admin)
    rekeyed = settings.model_copy(update={"secret_key": SecretStr("a-different-site-secret-key")})

    checked = services.check_service(
        session=session,
        settings=rekeyed,
        actor=make_principal(admin),
        monitor=monitor,
        name="plant-rabbit",
    )

    assert checked.health.status == HealthStatus.DOWN
    assert checked.health.error == UNDECRYPTABLE


def test_registered_services_follow_the_platform_ones_by_name(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(
        session, settings, monitor, admin, name="zeta-db", kind="postgres", url="postgresql://db/x"
    )
    _register(session, settings, monitor, admin, name="alpha-web", kind="http", url="http://x/")

    listed = services.list_services(
        session=session,
        settings=settings,
        actor=make_principal(admin),
        monitor=monitor,
        check=False,
    )

    assert [s.name for s in listed] == ["mqtt", "amqp", "postgres", "alpha-web", "zeta-db"]


def test_a_down_registered_service_says_why(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    with closed_port() as port:
        _register(session, settings, monitor, admin, url=url_at("amqp", port))
        checked = services.check_service(
            session=session,
            settings=settings,
            actor=make_principal(admin),
            monitor=monitor,
            name="plant-rabbit",
        )

    assert checked.health.status == HealthStatus.DOWN
    assert checked.health.error == "connection refused: nothing listens at that address"


@pytest.mark.parametrize(
    ("over", "loc", "message"),
    [
        (
            {"kind": "amqp", "url": "mqtt://127.0.0.1:1883"},
            ["url"],
            "amqp URLs start with amqp:// or amqps://, not mqtt://; "
            "e.g. amqp://rabbitmq.example.org:5672/.",
        ),
        (
            {"kind": "postgres", "url": "127.0.0.1:5432"},
            ["url"],
            "postgres URLs start with postgresql:// or postgres://; "
            "write e.g. postgresql://db.example.org:5432/twins.",
        ),
        (
            {"url": "amqp://guest:guest@127.0.0.1:5672/"},
            ["url"],
            "Put the username and password in their own fields, not in the URL: "
            "every user sees the URL.",
        ),
        (
            {"url": "amqp:///vhost"},
            ["url"],
            "The URL 'amqp:///vhost' names no host; write e.g. amqp://rabbitmq.example.org:5672/.",
        ),
        (
            {"url": "amqp://host:99999/"},
            ["url"],
            "The port in 'amqp://host:99999/' is not a number from 1 to 65535.",
        ),
        ({"url": ""}, ["url"], "Give the service's URL, e.g. amqp://rabbitmq.example.org:5672/."),
        (
            {"name": "Plant Rabbit"},
            ["name"],
            "'Plant Rabbit' cannot be a service name: use lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters.",
        ),
        (
            {"kind": "redis"},
            ["kind"],
            "'redis' is not a kind of service; use one of mqtt, amqp, postgres, influxdb, http.",
        ),
        (
            {"username": "a" * 257},
            ["username"],
            "The username is longer than 256 characters.",
        ),
    ],
    ids=[
        "scheme-of-another-kind",
        "no-scheme",
        "credentials-in-url",
        "no-host",
        "bad-port",
        "empty-url",
        "bad-name",
        "unknown-kind",
        "long-username",
    ],
)
def test_bad_input_is_refused_saying_what_to_do(
    session: Session,
    settings: Settings,
    monitor: HealthMonitor,
    admin: User,
    over: dict[str, str],
    loc: list[str],
    message: str,
) -> None:
    with pytest.raises(InvalidInput) as raised:
        _register(session, settings, monitor, admin, **over)

    assert raised.value.loc == loc
    assert raised.value.message == message
    assert _count(session) == 0


def test_several_bad_fields_are_reported_together(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    with pytest.raises(InvalidInput) as raised:
        _register(session, settings, monitor, admin, name="-x", url="ftp://x")

    assert [loc for _, loc in raised.value.problems] == [["name"], ["url"]]


def test_a_duplicate_name_is_a_conflict(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(session, settings, monitor, admin)

    with pytest.raises(Conflict) as raised:
        _register(session, settings, monitor, admin, url="amqp://other:5672/")

    assert raised.value.message == "A service named 'plant-rabbit' already exists."
    assert _count(session) == 1


@pytest.mark.parametrize("name", ["mqtt", "amqp", "postgres", "influxdb"])
def test_a_platform_service_name_cannot_be_registered(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User, name: str
) -> None:
    with pytest.raises(Conflict) as raised:
        _register(session, settings, monitor, admin, name=name)

    assert raised.value.message == (
        f"{name!r} is the name of a platform service; choose another name."
    )


@pytest.mark.parametrize("role", ["alice", "viewer"])
def test_only_admins_register_services(
    session: Session,
    settings: Settings,
    monitor: HealthMonitor,
    role: str,
    request: pytest.FixtureRequest,
) -> None:
    user = request.getfixturevalue(role)

    with pytest.raises(PermissionDenied) as raised:
        _register(session, settings, monitor, user)

    assert "does not allow 'manage_services'" in raised.value.message
    assert _count(session) == 0


def test_update_keeps_what_is_not_given_and_removes_a_password_set_to_none(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(session, settings, monitor, admin, password=PASSWORD)
    actor = make_principal(admin)

    kept = registry.update_service(
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        name="plant-rabbit",
        description="Moved to the new hall",
    )
    assert (kept.url, kept.username, kept.has_password) == (
        "amqp://127.0.0.1:5672/",
        "guest",
        True,
    )
    assert kept.description == "Moved to the new hall"

    cleared = registry.update_service(
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        name="plant-rabbit",
        password=None,
        username=KEEP,
    )
    assert cleared.has_password is False
    assert _raw_row(session, "plant-rabbit")["password_encrypted"] is None


def test_changing_the_kind_rechecks_the_stored_url(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(session, settings, monitor, admin)

    with pytest.raises(InvalidInput) as raised:
        registry.update_service(
            session=session,
            settings=settings,
            actor=make_principal(admin),
            monitor=monitor,
            name="plant-rabbit",
            kind="mqtt",
        )

    assert raised.value.loc == ["url"]
    assert raised.value.message.startswith("mqtt URLs start with mqtt:// or mqtts://")


def test_a_new_password_replaces_the_old_one(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(session, settings, monitor, admin, password="old-password-1")

    registry.update_service(
        session=session,
        settings=settings,
        actor=make_principal(admin),
        monitor=monitor,
        name="plant-rabbit",
        password=PASSWORD,
    )

    stored = str(_raw_row(session, "plant-rabbit")["password_encrypted"])
    assert decrypt_password(settings, stored) == PASSWORD


def test_delete_removes_a_registered_service(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    _register(session, settings, monitor, admin)

    registry.delete_service(
        session=session, actor=make_principal(admin), monitor=monitor, name="plant-rabbit"
    )

    assert _count(session) == 0
    with pytest.raises(NotFound):
        services.get_service(
            session=session,
            settings=settings,
            actor=make_principal(admin),
            monitor=monitor,
            name="plant-rabbit",
        )


def test_platform_services_cannot_be_changed_or_deleted_here(
    session: Session, monitor: HealthMonitor, admin: User
) -> None:
    with pytest.raises(Conflict) as raised:
        registry.delete_service(
            session=session, actor=make_principal(admin), monitor=monitor, name="amqp"
        )

    assert raised.value.message == (
        "'amqp' is a platform service; change it in the platform's settings "
        "(DTAAS_AMQP_URL), not here."
    )


def test_an_unknown_service_is_not_found(
    session: Session, settings: Settings, monitor: HealthMonitor, admin: User
) -> None:
    with pytest.raises(NotFound) as raised:
        services.check_service(
            session=session,
            settings=settings,
            actor=make_principal(admin),
            monitor=monitor,
            name="nothing-here",
        )

    assert raised.value.message == (
        "There is no service named 'nothing-here'; `GET /api/v1/services` lists them."
    )


def _count(session: Session) -> int:
    return int(session.execute(text("SELECT count(*) FROM registered_service")).scalar_one())


# --- the environment of a job --------------------------------------------------------------


def test_a_job_gets_the_urls_of_the_services_it_asks_for(settings: Settings) -> None:
    env = connection_env(settings, ["mqtt", "postgres"], 42, "alice")

    assert env == {
        "DTAAS_MQTT_URL": settings.mqtt_url,
        "DTAAS_POSTGRES_URL": settings.postgres_url,
        "DTAAS_TOPIC_PREFIX": "dtaas/alice/42/",
    }


def test_a_job_gets_full_credentials_and_nothing_for_unconfigured_services(
    settings: Settings,
) -> None:
    env = connection_env(settings, ["amqp", "influxdb"], 7, "bob")

    assert env == {
        "DTAAS_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
        "DTAAS_TOPIC_PREFIX": "dtaas/bob/7/",
    }


def test_a_job_on_a_laptop_gets_the_embedded_broker_with_its_instances_account(
    settings: Settings,
) -> None:
    from dtaas.services import accounts, mqtt_names
    from dtaas.services import broker as embedded

    laptop = settings.model_copy(
        update={"mqtt_url": None, "embedded_mqtt": True, "embedded_mqtt_port": 0}
    )
    assert connection_env(laptop, ["mqtt"], 1, "alice") == {"DTAAS_TOPIC_PREFIX": "dtaas/alice/1/"}
    broker = embedded.start_embedded_mqtt(laptop)
    assert broker is not None
    try:
        # The platform's own URL (its account) is never part of a job's environment.
        env = connection_env(laptop, ["mqtt"], 1, "alice")
        own = accounts.provision(laptop, instance_id=1, owner="alice", kinds=["mqtt"])
    finally:
        embedded.stop_embedded_mqtt(laptop, broker)

    assert env == {"DTAAS_TOPIC_PREFIX": "dtaas/alice/1/"}
    user = mqtt_names.instance_username(laptop, 1)
    password = mqtt_names.instance_password(laptop, 1, "alice")
    assert own == {"DTAAS_MQTT_URL": f"mqtt://{user}:{password}@127.0.0.1:{broker.port}"}
