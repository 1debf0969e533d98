"""Per-instance PostgreSQL roles and schemas on the machine's real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dtaas.config import Settings
from dtaas.services import isolation
from tests.conftest import POSTGRES_ADMIN_URL


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(
        data_dir=tmp_path / "data",
        secret_key="test-secret-key-not-for-production",
        postgres_url=POSTGRES_ADMIN_URL,
        demo=False,
    )
    yield settings
    for instance_id in (1, 2):
        isolation.drop(settings, instance_id)


def query(
    url: str, statement: str | sql.Composed, params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        cursor = connection.execute(statement, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def test_an_instance_cannot_read_another_instances_tables(site):
    first = isolation.provision(site, 1)
    second = isolation.provision(site, 2)
    query(first, "CREATE TABLE readings (value float); INSERT INTO readings VALUES (1.5)")
    schema = isolation.role_name(site, 1)

    own = query(first, "SELECT value FROM readings")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(second, sql.SQL("SELECT value FROM {}.readings").format(sql.Identifier(schema)))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        query(second, sql.SQL("CREATE TABLE {}.intruder (x int)").format(sql.Identifier(schema)))

    assert own == [(1.5,)]
    assert first != second and isolation.role_name(site, 1) in first


def test_terminate_revokes_login_and_clean_drops_role_and_schema(site):
    url = isolation.provision(site, 1)
    query(url, "CREATE TABLE kept (x int)")
    role = isolation.role_name(site, 1)

    isolation.revoke(site, 1)
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        query(url, "SELECT 1")
    admin = POSTGRES_ADMIN_URL.replace("+psycopg", "")
    kept = query(admin, "SELECT to_regclass(%s)::text", (f'"{role}".kept',))
    isolation.drop(site, 1)
    gone = query(
        admin,
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = %s),"
        " (SELECT count(*) FROM pg_namespace WHERE nspname = %s)",
        (role, role),
    )

    assert kept == [(f"{role}.kept",)]
    assert gone == [(0, 0)]


def test_sites_sharing_a_server_get_different_roles(site, tmp_path):
    other = site.model_copy(update={"data_dir": tmp_path / "other"})

    assert isolation.role_name(site, 1) != isolation.role_name(other, 1)
