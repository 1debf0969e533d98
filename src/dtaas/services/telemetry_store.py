"""Writing telemetry points in batches, and deleting the ones past retention.

A batch is one transaction: PostgreSQL gets it by binary ``COPY`` (the fastest way in,
several times a multi-row INSERT), SQLite by one ``executemany`` inside ``BEGIN``, so
each batch costs one commit (one fsync) whatever its size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import psycopg
from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import DBAPIError

from dtaas.services.models import TelemetryPoint

log = logging.getLogger(__name__)

# (instance_id, field, ts, value): the column order of the COPY below.
Row = tuple[int, str, float, float]
RETENTION_CHUNK = 20_000  # rows deleted per transaction: SQLite's write lock stays short
_COPY = "COPY telemetry_point (instance_id, field, ts, value) FROM STDIN (FORMAT BINARY)"


def insert_points(connection: Connection, rows: Sequence[Row]) -> None:
    """Add ``rows`` inside the connection's current transaction."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        _copy(connection, rows)
        return
    connection.execute(
        insert(TelemetryPoint),
        [{"instance_id": i, "field": f, "ts": t, "value": v} for i, f, t, v in rows],
    )


def _copy(connection: Connection, rows: Iterable[Row]) -> None:
    # The psycopg connection under SQLAlchemy's: COPY joins the same transaction.
    raw = connection.connection.driver_connection
    if not isinstance(raw, psycopg.Connection):  # psycopg is the only driver we ship
        raise TypeError(f"COPY needs psycopg 3, not {type(raw).__name__}")
    try:
        with raw.cursor() as cursor, cursor.copy(_COPY) as copy:
            copy.set_types(["int4", "text", "float8", "float8"])
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as exc:
        # As SQLAlchemy would have wrapped it: a deleted instance is an IntegrityError.
        raise DBAPIError.instance(_COPY, None, exc, psycopg.Error) from exc


def delete_expired(engine: Engine, *, before: float, chunk: int = RETENTION_CHUNK) -> int:
    """Delete points dated before ``before`` (epoch seconds); returns how many went.

    In chunks, each its own transaction, so ingestion and readers are never held up for
    long. A chunk's scan meets the oldest rows first (they were inserted first), so a
    sweep with nothing to delete costs one scan and one with much to delete is linear.
    """
    total = 0
    while True:
        oldest = select(TelemetryPoint.id).where(TelemetryPoint.ts < before).limit(chunk)
        with engine.begin() as connection:
            deleted = connection.execute(
                delete(TelemetryPoint).where(TelemetryPoint.id.in_(oldest))
            ).rowcount
        total += deleted
        if deleted < chunk:
            break
    if total:
        log.info("telemetry retention deleted points=%s before=%.0f", total, before)
    return total
