"""The service catalogue: the platform's services from settings, the embedded broker and the
services admins registered, each with its health, and the settings handed to DTs' jobs."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.errors import NotFound
from dtaas.security.permissions import Permission, Principal, require
from dtaas.services import broker as embedded
from dtaas.services import mqtt_accounts, mqtt_names
from dtaas.services.checks import Target
from dtaas.services.credentials import UNDECRYPTABLE, decrypt_password
from dtaas.services.health import Health, HealthMonitor
from dtaas.services.models import RegisteredService, ServiceKind
from dtaas.services.schemas import HealthRead, ServiceRead, Source

log = logging.getLogger(__name__)

# The platform's own services: the name each has in the catalogue is its kind.
ENV_VARS: dict[ServiceKind, str] = {
    ServiceKind.MQTT: "DTAAS_MQTT_URL",
    ServiceKind.AMQP: "DTAAS_AMQP_URL",
    ServiceKind.POSTGRES: "DTAAS_POSTGRES_URL",
    ServiceKind.INFLUXDB: "DTAAS_INFLUXDB_URL",
}
PLATFORM_NAMES = frozenset(kind.value for kind in ENV_VARS)
TOPIC_PREFIX_VAR = "DTAAS_TOPIC_PREFIX"


def public_url(url: str) -> str:
    """``url`` without its password, fit to show to every user."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def platform_url(settings: Settings, kind: ServiceKind) -> str | None:
    """The URL a DT uses for the platform's service of ``kind``, credentials included."""
    if kind == ServiceKind.MQTT and embedded.is_wanted(settings):
        return embedded.embedded_mqtt_url(settings)
    configured: dict[ServiceKind, str | None] = {
        ServiceKind.MQTT: settings.mqtt_url,
        ServiceKind.AMQP: settings.amqp_url,
        ServiceKind.POSTGRES: settings.postgres_url,
        ServiceKind.INFLUXDB: settings.influxdb_url,
    }
    return configured.get(kind)


def connection_env(
    settings: Settings, service_kinds: Iterable[str], instance_id: int, owner: str
) -> dict[str, str]:
    """The environment a job gets for the services its manifest asks for.

    A service the site has not configured is left out; the DT's dry run reports it.
    Every job gets its instance's MQTT topic prefix, ``dtaas/<owner>/<instance>/``.
    Where the broker isolates instances, MQTT is left out too: the platform's URL carries
    its own (or the dynsec admin's) account, and the instance's own account comes from
    ``accounts.provision``.
    """
    env = {TOPIC_PREFIX_VAR: mqtt_names.topic_prefix(owner, instance_id)}
    for name in service_kinds:
        kind = ServiceKind(name) if name in PLATFORM_NAMES else None
        if kind == ServiceKind.MQTT and mqtt_accounts.isolation(settings) is not None:
            continue
        url = platform_url(settings, kind) if kind is not None else None
        if kind is not None and url:
            env[ENV_VARS[kind]] = url
    return env


def _platform_entries(settings: Settings) -> list[tuple[Target, Source]]:
    entries: list[tuple[Target, Source]] = []
    for kind in ENV_VARS:
        if kind == ServiceKind.MQTT and embedded.is_wanted(settings):
            entries.append((_embedded_target(settings), "embedded"))
            continue
        url = platform_url(settings, kind)
        if url:
            entries.append((Target(name=kind.value, kind=kind, url=url), "settings"))
    return entries


def _embedded_target(settings: Settings) -> Target:
    broker = embedded.running_broker(settings)
    if broker is not None:
        # The address alone is shown; the check signs in as the platform.
        return Target(
            name="mqtt",
            kind=ServiceKind.MQTT,
            url=broker.url,
            username=mqtt_names.platform_username(settings),
            password=mqtt_names.platform_password(settings),
        )
    return Target(
        name="mqtt",
        kind=ServiceKind.MQTT,
        url=f"mqtt://{embedded.HOST}:{settings.embedded_mqtt_port}",
        problem="the embedded broker is not running in this process; see the platform's log",
    )


def _registered_target(settings: Settings, row: RegisteredService) -> Target:
    password = None
    problem = None
    if row.password_encrypted is not None:
        password = decrypt_password(settings, row.password_encrypted)
        problem = UNDECRYPTABLE if password is None else None
    return Target(
        name=row.name,
        kind=row.kind,
        url=row.url,
        username=row.username,
        password=password,
        problem=problem,
    )


def _read(
    target: Target,
    *,
    source: Source,
    health: Health,
    row: RegisteredService | None = None,
) -> ServiceRead:
    parts = urlsplit(target.url)
    if row is not None:
        username, has_password, description = row.username, row.has_password, row.description
    else:
        username = target.username or parts.username
        has_password = target.password is not None or parts.password is not None
        description = ""
    return ServiceRead(
        name=target.name,
        kind=target.kind,
        url=public_url(target.url),
        source=source,
        username=username,
        has_password=has_password,
        description=description,
        env_var=ENV_VARS[target.kind] if source != "registered" else None,
        health=HealthRead(
            status=health.status,
            latency_ms=health.latency_ms,
            checked_at=health.checked_at,
            error=health.error,
        ),
    )


def _entries(
    session: Session, settings: Settings
) -> list[tuple[Target, Source, RegisteredService | None]]:
    entries: list[tuple[Target, Source, RegisteredService | None]] = [
        (target, source, None) for target, source in _platform_entries(settings)
    ]
    rows = session.scalars(select(RegisteredService).order_by(RegisteredService.name))
    entries.extend((_registered_target(settings, row), "registered", row) for row in rows)
    return entries


def list_services(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    monitor: HealthMonitor,
    check: bool = True,
) -> list[ServiceRead]:
    """Every service in the catalogue: the platform's, then registered ones by name.

    With ``check`` each is checked (concurrently, results cached for a few seconds);
    without, the last cached result or "unknown" is shown and nothing waits.

    Raises: PermissionDenied.
    """
    require(actor, Permission.READ)
    entries = _entries(session, settings)
    targets = [target for target, _, _ in entries]
    if check:
        health = monitor.check(targets)
    else:
        health = {t.name: monitor.cached(t) or Health.unknown() for t in targets}
    return [
        _read(target, source=source, health=health[target.name], row=row)
        for target, source, row in entries
    ]


def get_service(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    monitor: HealthMonitor,
    name: str,
    check: bool = True,
    fresh: bool = False,
) -> ServiceRead:
    """One service with its health; ``fresh`` checks it now whatever the cache holds.

    Raises: PermissionDenied; NotFound.
    """
    require(actor, Permission.READ)
    for target, source, row in _entries(session, settings):
        if target.name == name:
            if check:
                health = monitor.check([target], fresh=fresh)[name]
            else:
                health = monitor.cached(target) or Health.unknown()
            return _read(target, source=source, health=health, row=row)
    raise NotFound(
        f"There is no service named {name!r}; `GET /api/v1/services` lists them.", loc=["name"]
    )


def check_service(
    *, session: Session, settings: Settings, actor: Principal, monitor: HealthMonitor, name: str
) -> ServiceRead:
    """Check one service now, ignoring any cached result.

    Raises: PermissionDenied; NotFound.
    """
    return get_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name, fresh=True
    )
