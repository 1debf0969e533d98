"""HTTP routes of telemetry: an instance's fields, a downsampled range, CSV and live SSE."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from dtaas.db import SessionDep
from dtaas.errors import InvalidInput, NotFound
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.services import telemetry_query as query
from dtaas.services.telemetry_schemas import TelemetryFields, TelemetrySeries

router = APIRouter(tags=["telemetry"])

STREAM_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0  # a comment line now and then keeps proxies from closing the stream
_EVENT_ID = re.compile(r"^[0-9]{1,18}$")

FieldName = Annotated[str, Query(min_length=1, max_length=128, description="A field's name.")]
FieldNames = Annotated[
    list[str],
    Query(max_length=64, description="Fields to include (repeat the parameter); default all."),
]
TimeBound = Annotated[
    str | None,
    Query(max_length=64, description="Epoch seconds or ISO 8601, e.g. 2026-11-27T08:00:00Z."),
]


@router.get("/instances/{instance_id}/telemetry/fields", response_model=TelemetryFields)
def read_fields(
    instance_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> TelemetryFields:
    """The fields the DT declares (with units) and the ones it has sent, with their extent."""
    return query.list_fields(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )


@router.get("/instances/{instance_id}/telemetry", response_model=TelemetrySeries)
def read_series(
    instance_id: int,
    field: FieldName,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    start: TimeBound = None,
    end: TimeBound = None,
    points: Annotated[
        int, Query(ge=2, le=query.MAX_POINTS, description="Most rows returned.")
    ] = query.DEFAULT_POINTS,
) -> TelemetrySeries:
    """A field over a time range, downsampled on the server to at most ``points`` rows of
    min/max/mean per equal time bucket."""
    return query.read_series(
        session=session,
        settings=settings,
        actor=actor,
        instance_id=instance_id,
        field=field,
        start=start,
        end=end,
        points=points,
    )


@router.get("/instances/{instance_id}/telemetry.csv", response_class=StreamingResponse)
def export_csv(
    instance_id: int,
    request: Request,
    session: SessionDep,
    actor: CurrentActor,
    field: FieldNames = [],  # noqa: B006  # FastAPI copies defaults; a list makes it repeatable
    start: TimeBound = None,
    end: TimeBound = None,
) -> StreamingResponse:
    """Every point (of the given fields, in the range) as CSV, streamed."""
    export = query.prepare_export(
        session=session, actor=actor, instance_id=instance_id, fields=field, start=start, end=end
    )
    return StreamingResponse(
        query.iter_csv(request.app.state.sessionmaker, export),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )


@contextmanager
def _reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that reads without taking SQLite's write lock (the writer keeps writing)."""
    with factory() as session:
        session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        yield session


def _resume_after(last_event_id: str | None) -> int | None:
    if last_event_id is None:
        return None
    if not _EVENT_ID.match(last_event_id.strip()):
        raise InvalidInput(
            f"Last-Event-ID {last_event_id[:40]!r} is not an event id of this stream (a whole "
            "number); leave the header out to start from now.",
            loc=["header", "Last-Event-ID"],
        )
    return int(last_event_id)


@router.get("/instances/{instance_id}/telemetry/events")
async def follow_telemetry(
    instance_id: int,
    request: Request,
    actor: CurrentActor,
    field: FieldNames = [],  # noqa: B006  # see export_csv
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``ready``, then ``points`` events with the points stored since
    (``{"<field>": {"t": [...], "v": [...]}}``); ``end`` if the instance is deleted. Each
    ``points`` event has an id, so a reconnecting browser resumes where it left off."""
    factory: sessionmaker[Session] = request.app.state.sessionmaker
    resume = _resume_after(last_event_id)

    def begin() -> tuple[tuple[str, ...], int]:
        with _reading(factory) as session:
            names = query.check_stream(
                session=session, actor=actor, instance_id=instance_id, fields=field
            )
            return names, resume if resume is not None else query.last_point_id(session)

    names, after = await run_in_threadpool(begin)  # NotFound before the stream starts

    def poll(after: int) -> tuple[int, dict[str, dict[str, list[float]]]]:
        with _reading(factory) as session:
            return query.points_after(
                session, actor=actor, instance_id=instance_id, after=after, fields=names
            )

    async def events() -> AsyncIterator[str]:
        nonlocal after
        yield f"event: ready\ndata: {json.dumps({'after': after})}\n\n"
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            try:
                newest, grouped = await run_in_threadpool(poll, after)
            except NotFound:
                yield "event: end\ndata: {}\n\n"
                return
            if grouped:
                yield f"id: {newest}\nevent: points\ndata: {json.dumps(grouped)}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                yield ": keepalive\n\n"
                quiet_since = time.monotonic()
            full = sum(len(column["t"]) for column in grouped.values()) >= query.STREAM_BATCH
            after = newest
            if not full:  # a full batch means more are waiting: fetch them at once
                await asyncio.sleep(STREAM_POLL_SECONDS)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
