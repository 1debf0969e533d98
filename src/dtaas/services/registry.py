"""External services admins register: validation with precise messages, and the commands
that add, change and remove them (passwords encrypted at rest)."""

from __future__ import annotations

import enum
import logging
import re
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.errors import Conflict, InvalidInput, NotFound
from dtaas.security.permissions import Permission, Principal, require
from dtaas.services.credentials import encrypt_password
from dtaas.services.health import HealthMonitor
from dtaas.services.models import RegisteredService, ServiceKind
from dtaas.services.schemas import NAME_PATTERN, ServiceRead
from dtaas.services.service import ENV_VARS, PLATFORM_NAMES, get_service

log = logging.getLogger(__name__)

SCHEMES: dict[ServiceKind, tuple[str, ...]] = {
    ServiceKind.MQTT: ("mqtt", "mqtts"),
    ServiceKind.AMQP: ("amqp", "amqps"),
    ServiceKind.POSTGRES: ("postgresql", "postgres"),
    ServiceKind.INFLUXDB: ("http", "https"),
    ServiceKind.HTTP: ("http", "https"),
}
EXAMPLES: dict[ServiceKind, str] = {
    ServiceKind.MQTT: "mqtt://broker.example.org:1883",
    ServiceKind.AMQP: "amqp://rabbitmq.example.org:5672/",
    ServiceKind.POSTGRES: "postgresql://db.example.org:5432/twins",
    ServiceKind.INFLUXDB: "http://influxdb.example.org:8086",
    ServiceKind.HTTP: "https://api.example.org/",
}
_NAME = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_URL = 2048
MAX_USERNAME = 256
MAX_PASSWORD = 1024
MAX_DESCRIPTION = 500


class Keep(enum.Enum):
    """Marks an update argument that was not given: the stored value stays."""

    KEEP = "keep"


KEEP = Keep.KEEP


def _check_kind(kind: str, problems: list[tuple[str, list[str | int]]]) -> ServiceKind | None:
    try:
        return ServiceKind(kind)
    except ValueError:
        known = ", ".join(k.value for k in ServiceKind)
        problems.append((f"{kind!r} is not a kind of service; use one of {known}.", ["kind"]))
        return None


def _check_url(kind: ServiceKind, url: str) -> str | None:
    """Why ``url`` cannot be a ``kind`` service's URL, or None if it can."""
    example = EXAMPLES[kind]
    if not url:
        return f"Give the service's URL, e.g. {example}."
    if len(url) > MAX_URL:
        return f"The URL is {len(url)} characters long; at most {MAX_URL} are allowed."
    if _CONTROL.search(url) or " " in url:
        return "The URL must not contain spaces or control characters."
    parts = urlsplit(url)
    schemes = SCHEMES[kind]
    if parts.scheme.lower() not in schemes:
        wanted = " or ".join(f"{scheme}://" for scheme in schemes)
        if not parts.scheme:
            return f"{kind.value} URLs start with {wanted}; write e.g. {example}."
        return f"{kind.value} URLs start with {wanted}, not {parts.scheme}://; e.g. {example}."
    if "@" in parts.netloc:
        # Checked before anything echoes the URL back: it may hold a password.
        return (
            "Put the username and password in their own fields, not in the URL: "
            "every user sees the URL."
        )
    if not parts.hostname:
        return f"The URL {url!r} names no host; write e.g. {example}."
    try:
        parts.port  # noqa: B018  # parsing the port is the check
    except ValueError:
        return f"The port in {url!r} is not a number from 1 to 65535."
    return None


def _check_text(
    value: str | None,
    *,
    field: str,
    limit: int,
    problems: list[tuple[str, list[str | int]]],
) -> None:
    if value is None:
        return
    if len(value) > limit:
        problems.append((f"The {field} is longer than {limit} characters.", [field]))
    elif _CONTROL.search(value):
        problems.append((f"The {field} must not contain control characters.", [field]))


def _check_name(name: str, problems: list[tuple[str, list[str | int]]]) -> None:
    if not _NAME.match(name):
        problems.append(
            (
                f"{name!r} cannot be a service name: use lowercase letters, digits and '-', "
                "starting with a letter, at most 63 characters.",
                ["name"],
            )
        )


def _raise_problems(problems: list[tuple[str, list[str | int]]]) -> None:
    if problems:
        raise InvalidInput(problems[0][0], loc=problems[0][1], problems=problems)


def _find_row(session: Session, name: str) -> RegisteredService | None:
    return session.scalar(select(RegisteredService).where(RegisteredService.name == name))


def _get_row(session: Session, name: str) -> RegisteredService:
    row = _find_row(session, name)
    if row is None:
        if name in PLATFORM_NAMES:
            raise Conflict(
                f"{name!r} is a platform service; change it in the platform's settings "
                f"({ENV_VARS[ServiceKind(name)]}), not here.",
                loc=["name"],
            )
        raise NotFound(f"There is no registered service named {name!r}.", loc=["name"])
    return row


def register_service(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    monitor: HealthMonitor,
    name: str,
    kind: str,
    url: str,
    username: str | None = None,
    password: str | None = None,
    description: str = "",
) -> ServiceRead:
    """Add an external service to the catalogue; its password is stored encrypted.

    Raises: PermissionDenied unless an admin; InvalidInput with one problem per bad field;
    Conflict for a name that is taken.
    """
    require(actor, Permission.MANAGE_SERVICES)
    name, url, description = name.strip(), url.strip(), description.strip()
    problems: list[tuple[str, list[str | int]]] = []
    _check_name(name, problems)
    checked_kind = _check_kind(kind, problems)
    if checked_kind is not None and (problem := _check_url(checked_kind, url)):
        problems.append((problem, ["url"]))
    _check_text(username, field="username", limit=MAX_USERNAME, problems=problems)
    _check_text(password, field="password", limit=MAX_PASSWORD, problems=problems)
    _check_text(description, field="description", limit=MAX_DESCRIPTION, problems=problems)
    _raise_problems(problems)
    if name in PLATFORM_NAMES:
        raise Conflict(
            f"{name!r} is the name of a platform service; choose another name.", loc=["name"]
        )
    if _find_row(session, name) is not None:
        raise Conflict(f"A service named {name!r} already exists.", loc=["name"])
    row = RegisteredService(
        name=name,
        kind=ServiceKind(kind),  # checked above
        url=url,
        username=username or None,
        password_encrypted=encrypt_password(settings, password) if password else None,
        description=description,
        created_by_id=actor.user_id,
    )
    session.add(row)
    _commit(session, name)
    monitor.forget(name)
    log.info("service registered name=%s kind=%s actor=%s", name, kind, actor.username)
    return get_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name, check=False
    )


def update_service(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    monitor: HealthMonitor,
    name: str,
    kind: str | Keep = KEEP,
    url: str | Keep = KEEP,
    username: str | Keep | None = KEEP,
    password: str | Keep | None = KEEP,
    description: str | Keep = KEEP,
) -> ServiceRead:
    """Change a registered service; arguments left out keep their value, and ``None``
    removes the username or password.

    Raises: PermissionDenied unless an admin; NotFound; Conflict for a platform service;
    InvalidInput with one problem per bad field.
    """
    require(actor, Permission.MANAGE_SERVICES)
    row = _get_row(session, name)
    problems: list[tuple[str, list[str | int]]] = []
    new_kind = row.kind if isinstance(kind, Keep) else _check_kind(kind, problems)
    new_url = row.url if isinstance(url, Keep) else url.strip()
    # A new kind re-checks the stored URL too: an mqtt:// URL cannot serve AMQP.
    if new_kind is not None and (problem := _check_url(new_kind, new_url)):
        problems.append((problem, ["url"]))
    if not isinstance(username, Keep):
        _check_text(username, field="username", limit=MAX_USERNAME, problems=problems)
    if not isinstance(password, Keep):
        _check_text(password, field="password", limit=MAX_PASSWORD, problems=problems)
    if not isinstance(description, Keep):
        description = description.strip()
        _check_text(description, field="description", limit=MAX_DESCRIPTION, problems=problems)
    _raise_problems(problems)
    row.kind, row.url = ServiceKind(new_kind or row.kind), new_url
    if not isinstance(username, Keep):
        row.username = username or None
    if not isinstance(password, Keep):
        row.password_encrypted = encrypt_password(settings, password) if password else None
    if not isinstance(description, Keep):
        row.description = description
    _commit(session, name)
    monitor.forget(name)
    log.info("service updated name=%s actor=%s", name, actor.username)
    return get_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name, check=False
    )


def delete_service(
    *, session: Session, actor: Principal, monitor: HealthMonitor, name: str
) -> None:
    """Remove a registered service from the catalogue.

    Raises: PermissionDenied unless an admin; NotFound; Conflict for a platform service.
    """
    require(actor, Permission.MANAGE_SERVICES)
    row = _get_row(session, name)
    session.delete(row)
    session.commit()
    monitor.forget(name)
    log.info("service deleted name=%s actor=%s", name, actor.username)


def _commit(session: Session, name: str) -> None:
    try:
        session.commit()
    except IntegrityError as exc:
        # Two admins registering the same name at once: the unique constraint decides.
        session.rollback()
        raise Conflict(f"A service named {name!r} already exists.", loc=["name"]) from exc
