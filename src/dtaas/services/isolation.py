"""Per-instance PostgreSQL: a role and a schema of its own for each instance that asks.

An instance whose manifest lists ``postgres`` gets a role ``dtaas_<site>_i<id>`` (``<site>``
tells sites sharing one server apart) that owns the schema of the same name, its
``search_path``; no other instance's role may use that schema, so one instance cannot read
another's tables. The role's password is derived from the site's secret (nothing to
store). Login is revoked when the instance is terminated; role and schema are dropped when
its working copy is cleaned or it is deleted.

Privileges isolate instances only where the server checks passwords: under ``trust``
authentication any client may log in as any role. docs/services.md says so.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from dtaas.config import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5


def role_name(settings: Settings, instance_id: int) -> str:
    site = hashlib.sha256(
        f"{settings.signing_key()}:{settings.data_dir.resolve()}".encode()
    ).hexdigest()[:8]
    return f"dtaas_{site}_i{instance_id}"


def _password(settings: Settings, instance_id: int) -> str:
    key = settings.signing_key().encode()
    return hmac.new(key, f"postgres-instance:{instance_id}".encode(), hashlib.sha256).hexdigest()


def _admin_dsn(settings: Settings) -> str:
    url = settings.postgres_url or ""
    # psycopg takes postgresql://; SQLAlchemy-style URLs may name a driver.
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def instance_url(settings: Settings, instance_id: int) -> str:
    """The URL the instance's jobs connect with: its own role on the same database."""
    parts = urlsplit(_admin_dsn(settings))
    host = parts.hostname or "127.0.0.1"
    netloc = f"{role_name(settings, instance_id)}:{quote(_password(settings, instance_id))}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(("postgresql", netloc, parts.path, parts.query, ""))


def _execute(settings: Settings, *statements: sql.Composed) -> None:
    with psycopg.connect(
        _admin_dsn(settings), autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
    ) as connection:
        for statement in statements:
            connection.execute(statement)


def provision(settings: Settings, instance_id: int) -> str:
    """Create (or re-enable) the instance's role and schema; returns its URL."""
    role = sql.Identifier(role_name(settings, instance_id))
    password = sql.Literal(_password(settings, instance_id))
    with psycopg.connect(
        _admin_dsn(settings), autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
    ) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (role_name(settings, instance_id),)
        ).fetchone()
        verb = "ALTER" if exists else "CREATE"
        connection.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(role, password))
        connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(role, role)
        )
        connection.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(role, role))
    log.info("postgres provisioned instance_id=%s", instance_id)
    return instance_url(settings, instance_id)


def revoke(settings: Settings, instance_id: int) -> None:
    """No more logins for the instance's role, and its sessions end; its data stays."""
    if not settings.postgres_url:
        return
    try:
        _execute(
            settings,
            sql.SQL(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {name}) THEN "
                "ALTER ROLE {role} NOLOGIN; END IF; END $$"
            ).format(
                name=sql.Literal(role_name(settings, instance_id)),
                role=sql.Identifier(role_name(settings, instance_id)),
            ),
            sql.SQL(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}"
            ).format(sql.Literal(role_name(settings, instance_id))),
        )
    except psycopg.Error:
        log.exception("postgres login not revoked instance_id=%s", instance_id)


def drop(settings: Settings, instance_id: int) -> None:
    """Remove the instance's schema (with its tables) and role."""
    if not settings.postgres_url:
        return
    role = sql.Identifier(role_name(settings, instance_id))
    try:
        revoke(settings, instance_id)
        _execute(
            settings,
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(role),
            sql.SQL("DROP ROLE IF EXISTS {}").format(role),
        )
    except psycopg.Error:
        log.exception("postgres role not dropped instance_id=%s", instance_id)
