"""Reading an instance's telemetry: its fields, a downsampled range, CSV, new points.

Only the instance's owner may read it (``lifecycle.get_instance`` answers 404 to anyone
else). Downsampling happens in the database, bucketed by time, so a range of millions of
points costs one indexed scan and returns at most ``points`` rows (see ``TelemetrySeries``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Integer, Select, cast, func, literal_column, select, text
from sqlalchemy.orm import Session, sessionmaker

from dtaas.config import Settings
from dtaas.errors import InvalidInput, NotFound
from dtaas.lifecycle import service as lifecycle
from dtaas.security.permissions import Permission, Principal, require
from dtaas.services.models import TelemetryPoint
from dtaas.services.telemetry_payload import FIELD_PATTERN, parse_time
from dtaas.services.telemetry_schemas import TelemetryFieldRead, TelemetryFields, TelemetrySeries
from dtaas.twins import service as twins
from dtaas.twins.manifest import TelemetryField

MAX_POINTS = 10_000
DEFAULT_POINTS = 500
STREAM_BATCH = 5_000  # new points sent in one event at most; the rest follow at once
EXPORT_CHUNK = 5_000
_POINT = TelemetryPoint
_FIELD = re.compile(FIELD_PATTERN)
# Distinct fields by a loose index scan: one index seek per field, not one row per point.
_DISTINCT_FIELDS = text(
    """
    WITH RECURSIVE seen(name) AS (
        SELECT min(field) FROM telemetry_point WHERE instance_id = :instance_id
        UNION ALL
        SELECT (SELECT min(field) FROM telemetry_point
                WHERE instance_id = :instance_id AND field > seen.name)
        FROM seen WHERE seen.name IS NOT NULL
    )
    SELECT name FROM seen WHERE name IS NOT NULL
    """
)


def _declared(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int
) -> list[TelemetryField]:
    """The instance's declared fields (none once its working copy is cleaned).

    Raises: NotFound for an instance that is not the actor's.
    """
    instance = lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    manifest = twins.manifest_in(lifecycle.working_copy(settings, instance))
    return list(manifest.telemetry) if manifest is not None else []


def check_field_name(name: str, *, loc: Sequence[str | int]) -> str:
    """``name`` if it can be a telemetry field.

    Raises: InvalidInput naming the rule.
    """
    if not _FIELD.match(name):
        raise InvalidInput(
            f"{name[:140]!r} is not a telemetry field name: use letters, digits, '_' and '.', "
            "starting with a letter or '_', at most 128 characters.",
            loc=loc,
        )
    return name


def parse_bound(value: str | None, *, name: str) -> float | None:
    """A ``start``/``end`` query value as epoch seconds; None when not given.

    Raises: InvalidInput saying which forms are accepted.
    """
    if value is None or not value.strip():
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InvalidInput(
            f"{name} {value[:60]!r} is not a time: give epoch seconds (e.g. 1764230400.5) "
            f"or ISO 8601 (e.g. 2026-11-27T08:00:00Z). {exc}.",
            loc=["query", name],
        ) from None


def check_range(start: float | None, end: float | None) -> None:
    """Raises: InvalidInput when ``start`` is not before ``end``."""
    if start is not None and end is not None and start >= end:
        raise InvalidInput(
            f"start ({_iso(start)}) must be before end ({_iso(end)}).", loc=["query", "start"]
        )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# --- fields ----------------------------------------------------------------------------------


def list_fields(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int
) -> TelemetryFields:
    """The declared fields (with label and unit), then the others the instance has sent.

    Raises: PermissionDenied; NotFound.
    """
    require(actor, Permission.READ)
    declared = _declared(session=session, settings=settings, actor=actor, instance_id=instance_id)
    connection = session.connection()
    seen = [row[0] for row in connection.execute(_DISTINCT_FIELDS, {"instance_id": instance_id})]
    out = [
        TelemetryFieldRead(field=d.field, label=d.label, unit=d.unit, declared=True)
        for d in declared
    ]
    names = {d.field for d in declared}
    out += [TelemetryFieldRead(field=name, declared=False) for name in seen if name not in names]
    for item in out:
        if item.field in seen:
            _add_extent(connection, instance_id, item)
    return TelemetryFields(instance_id=instance_id, fields=out)


def _series_of(instance_id: int, field: str) -> Select[float, float]:
    return select(_POINT.ts, _POINT.value).where(
        _POINT.instance_id == instance_id, _POINT.field == field
    )


def _add_extent(connection: Connection, instance_id: int, item: TelemetryFieldRead) -> None:
    base = _series_of(instance_id, item.field)
    first = connection.execute(base.order_by(_POINT.ts).limit(1)).first()
    last = connection.execute(base.order_by(_POINT.ts.desc()).limit(1)).first()
    if first is not None and last is not None:
        item.first_ts, item.last_ts, item.last_value = first.ts, last.ts, last.value


# --- a range ---------------------------------------------------------------------------------


def read_series(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    instance_id: int,
    field: str,
    start: str | None = None,
    end: str | None = None,
    points: int = DEFAULT_POINTS,
) -> TelemetrySeries:
    """One field between ``start`` and ``end`` (default: all of it), at most ``points`` rows.

    Raises: PermissionDenied; NotFound for the instance or a field it neither declares nor
    has sent; InvalidInput for a bad name, time or range.
    """
    require(actor, Permission.READ)
    check_field_name(field, loc=["query", "field"])
    low, high = parse_bound(start, name="start"), parse_bound(end, name="end")
    check_range(low, high)
    if not 2 <= points <= MAX_POINTS:
        raise InvalidInput(
            f"points must be from 2 to {MAX_POINTS}, not {points}.", loc=["query", "points"]
        )
    declared = {
        d.field: d
        for d in _declared(session=session, settings=settings, actor=actor, instance_id=instance_id)
    }
    connection = session.connection()
    base = _series_of(instance_id, field)
    first = connection.execute(base.order_by(_POINT.ts).limit(1)).first()
    if first is None and field not in declared:
        raise NotFound(
            f"Instance {instance_id} has no telemetry field {field!r}; "
            f"GET /api/v1/instances/{instance_id}/telemetry/fields lists its fields.",
            loc=["query", "field"],
        )
    unit = declared[field].unit if field in declared else ""
    series = TelemetrySeries(
        instance_id=instance_id,
        field=field,
        unit=unit,
        start=low,
        end=high,
        points=points,
        raw_points=0,
        downsampled=False,
        t=[],
        avg=[],
        min=[],
        max=[],
        count=[],
    )
    if first is None:
        return series
    if low is None:
        low = first.ts
    if high is None:
        high = connection.execute(base.order_by(_POINT.ts.desc()).limit(1)).one().ts
    series.start, series.end = low, high
    in_range = base.where(_POINT.ts >= low, _POINT.ts <= high)
    series.raw_points = connection.execute(
        select(func.count()).select_from(in_range.subquery())
    ).scalar_one()
    if series.raw_points <= points:
        for ts, value in connection.execute(in_range.order_by(_POINT.ts)):
            series.t.append(ts)
            series.avg.append(value)
            series.min.append(value)
            series.max.append(value)
            series.count.append(1)
        return series
    _fill_buckets(connection, series, instance_id=instance_id, low=low, high=high)
    return series


@dataclass
class _Bucket:
    count: int
    t_sum: float
    low: float
    high: float
    value_sum: float


def _fill_buckets(
    connection: Connection, series: TelemetrySeries, *, instance_id: int, low: float, high: float
) -> None:
    """Aggregate ``series.points`` equal time buckets of the range in the database."""
    width = (high - low) / series.points
    offset = (_POINT.ts - low) / width
    # CAST truncates on SQLite (offsets are >= 0, so it floors); on PostgreSQL it rounds.
    index = func.floor(offset) if connection.dialect.name == "postgresql" else cast(offset, Integer)
    query = (
        select(
            index.label("bucket"),
            func.count(),
            func.sum(_POINT.ts),
            func.min(_POINT.value),
            func.max(_POINT.value),
            func.sum(_POINT.value),
        )
        .where(
            _POINT.instance_id == instance_id,
            _POINT.field == series.field,
            _POINT.ts >= low,
            _POINT.ts <= high,
        )
        # By the output name: PostgreSQL would not see two renderings of the expression,
        # each with its own bound parameters, as the same.
        .group_by(literal_column("bucket"))
        .order_by(literal_column("bucket"))
    )
    buckets: dict[int, _Bucket] = {}
    for bucket, count, t_sum, smallest, largest, value_sum in connection.execute(query):
        # A point exactly at ``high`` falls one bucket past the last: it joins the last.
        key = min(int(bucket), series.points - 1)
        found = buckets.get(key)
        if found is None:
            buckets[key] = _Bucket(count, t_sum, smallest, largest, value_sum)
        else:
            found.count += count
            found.t_sum += t_sum
            found.low, found.high = min(found.low, smallest), max(found.high, largest)
            found.value_sum += value_sum
    for key in sorted(buckets):
        b = buckets[key]
        series.t.append(b.t_sum / b.count)
        series.avg.append(b.value_sum / b.count)
        series.min.append(b.low)
        series.max.append(b.high)
        series.count.append(b.count)
    series.downsampled = True
    series.bucket_seconds = width


# --- CSV and the live stream -----------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """A checked CSV export, streamed later on a connection of its own."""

    instance_id: int
    fields: tuple[str, ...]
    start: float | None
    end: float | None

    @property
    def filename(self) -> str:
        return f"instance-{self.instance_id}-telemetry.csv"


def prepare_export(
    *,
    session: Session,
    actor: Principal,
    instance_id: int,
    fields: Sequence[str] = (),
    start: str | None = None,
    end: str | None = None,
) -> Export:
    """Check an export of some (default: all) fields of an instance in a time range.

    Raises: PermissionDenied; NotFound; InvalidInput for a bad name, time or range.
    """
    require(actor, Permission.READ)
    lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    for index, name in enumerate(fields):
        check_field_name(name, loc=["query", "field", index])
    low, high = parse_bound(start, name="start"), parse_bound(end, name="end")
    check_range(low, high)
    return Export(instance_id=instance_id, fields=tuple(dict.fromkeys(fields)), start=low, end=high)


def iter_csv(sessions: sessionmaker[Session], export: Export) -> Iterator[str]:
    """The export as CSV text: ``time,epoch_seconds,field,value``, by field then time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["time", "epoch_seconds", "field", "value"])
    query = select(_POINT.field, _POINT.ts, _POINT.value).where(
        _POINT.instance_id == export.instance_id
    )
    if export.fields:
        query = query.where(_POINT.field.in_(export.fields))
    if export.start is not None:
        query = query.where(_POINT.ts >= export.start)
    if export.end is not None:
        query = query.where(_POINT.ts <= export.end)
    query = query.order_by(_POINT.field, _POINT.ts)
    with sessions() as session:
        # DEFERRED: a long export must not hold SQLite's write lock against the ingestor.
        connection = session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        result = connection.execute(query.execution_options(yield_per=EXPORT_CHUNK))
        for chunk in result.partitions():
            for name, ts, value in chunk:
                writer.writerow([_iso(ts), repr(ts), name, repr(value)])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def check_stream(
    *, session: Session, actor: Principal, instance_id: int, fields: Sequence[str] = ()
) -> tuple[str, ...]:
    """Check a live stream's instance and field names; returns the names, deduplicated.

    Raises: PermissionDenied; NotFound; InvalidInput.
    """
    require(actor, Permission.READ)
    lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    for index, name in enumerate(fields):
        check_field_name(name, loc=["query", "field", index])
    return tuple(dict.fromkeys(fields))


def last_point_id(session: Session) -> int:
    """The id of the newest stored point of any instance (0 if none): where a stream starts."""
    found = session.execute(select(func.max(_POINT.id))).scalar_one_or_none()
    return int(found or 0)


def points_after(
    session: Session,
    *,
    actor: Principal,
    instance_id: int,
    after: int,
    fields: Sequence[str] = (),
    limit: int = STREAM_BATCH,
) -> tuple[int, dict[str, dict[str, list[float]]]]:
    """Points of the instance stored after point ``after``: the new last id, and by field
    ``{"t": [...], "v": [...]}`` in the order they were stored.

    The newest id is read first and only points up to it are read: one writer per site
    commits its batches one after the other (and ids are never reused), so every point
    up to an id seen committed is committed too, and the next call may start there even
    when the points were other instances'. Otherwise an idle instance's stream would scan
    every other instance's new points on each call, more every time.

    Raises: NotFound once the instance is gone (or was never the actor's).
    """
    lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    ceiling = last_point_id(session)
    query = select(_POINT.id, _POINT.field, _POINT.ts, _POINT.value).where(
        _POINT.id > after, _POINT.id <= ceiling, _POINT.instance_id == instance_id
    )
    if fields:
        query = query.where(_POINT.field.in_(fields))
    rows = session.execute(query.order_by(_POINT.id).limit(limit)).all()
    grouped: dict[str, dict[str, list[float]]] = {}
    for _, name, ts, value in rows:
        column = grouped.setdefault(name, {"t": [], "v": []})
        column["t"].append(ts)
        column["v"].append(value)
    newest = rows[-1].id if len(rows) == limit else max(after, ceiling)
    return newest, grouped
