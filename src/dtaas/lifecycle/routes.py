"""HTTP routes of the lifecycle manager: instances, phases, jobs and their live logs."""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from dtaas.db import SessionDep
from dtaas.lifecycle import service
from dtaas.lifecycle.models import Instance, Job
from dtaas.lifecycle.schemas import (
    InstanceCreate,
    InstanceDetail,
    InstanceRead,
    JobRead,
    PhaseRun,
)
from dtaas.security.deps import CurrentActor, SettingsDep

router = APIRouter(tags=["lifecycle"])

FOLLOW_POLL_SECONDS = 0.25


def instance_read(settings: SettingsDep, instance: Instance) -> InstanceRead:
    read = InstanceRead.model_validate(instance)
    read.phases = service.available_phases(settings, instance)
    return read


def _job_read(session: SessionDep, job: Job) -> JobRead:
    read = JobRead.model_validate(job)
    read.queue_position = service.queue_position(session=session, job=job)
    return read


@router.post("/instances", response_model=InstanceRead, status_code=201)
def create_instance(
    body: InstanceCreate, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> InstanceRead:
    """Deploy a DT with a saved configuration and/or parameter values."""
    instance = service.create_instance(
        session=session,
        settings=settings,
        actor=actor,
        twin_path=body.twin_path,
        values=body.values,
        configuration_id=body.configuration_id,
        name=body.name,
    )
    return instance_read(settings, instance)


@router.get("/instances", response_model=list[InstanceRead])
def list_instances(
    session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> list[InstanceRead]:
    """Your instances, newest first."""
    return [
        instance_read(settings, i) for i in service.list_instances(session=session, actor=actor)
    ]


@router.get("/instances/{instance_id}", response_model=InstanceDetail)
def read_instance(
    instance_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> InstanceDetail:
    """An instance with its jobs."""
    instance = service.get_instance(session=session, actor=actor, instance_id=instance_id)
    return InstanceDetail(
        **instance_read(settings, instance).model_dump(),
        jobs=[_job_read(session, job) for job in instance.jobs],
    )


@router.post("/instances/{instance_id}/phases", response_model=JobRead, status_code=202)
def run_phase(
    instance_id: int,
    body: PhaseRun,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> JobRead:
    """Queue a lifecycle phase (create, execute, analyze, ...) of an instance."""
    job = service.run_phase(
        session=session, settings=settings, actor=actor, instance_id=instance_id, phase=body.phase
    )
    return _job_read(session, job)


@router.post("/instances/{instance_id}/terminate", response_model=InstanceRead, status_code=202)
def terminate(
    instance_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> InstanceRead:
    """Stop a running phase and run the DT's terminate script."""
    instance = service.terminate(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )
    return instance_read(settings, instance)


@router.post("/instances/{instance_id}/clean", response_model=InstanceRead, status_code=202)
def clean(
    instance_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> InstanceRead:
    """Run the DT's clean script and remove the working copy."""
    instance = service.clean(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )
    return instance_read(settings, instance)


@router.delete("/instances/{instance_id}", status_code=204)
def delete_instance(
    instance_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> None:
    """Forget an instance, its jobs and logs."""
    service.delete_instance(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )


@router.get("/jobs/{job_id}", response_model=JobRead)
def read_job(job_id: int, session: SessionDep, actor: CurrentActor) -> JobRead:
    """A job: state, exit status, usage, provenance and queue position."""
    return _job_read(session, service.get_job(session=session, actor=actor, job_id=job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobRead, status_code=202)
def cancel_job(job_id: int, session: SessionDep, actor: CurrentActor) -> JobRead:
    """Ask a running job to stop."""
    return _job_read(session, service.cancel_job(session=session, actor=actor, job_id=job_id))


@router.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
def read_logs(
    job_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    stream: Literal["stdout", "stderr"] = "stdout",
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PlainTextResponse:
    """A job's stdout or stderr so far, from a byte offset."""
    job = service.get_job(session=session, actor=actor, job_id=job_id)
    data = service.read_log(settings=settings, job=job, stream=stream, offset=offset)
    return PlainTextResponse(data.decode("utf-8", errors="replace"))


@router.get("/jobs/{job_id}/events")
async def follow_job(
    job_id: int, request: Request, settings: SettingsDep, actor: CurrentActor
) -> StreamingResponse:
    """Server-Sent Events: ``log`` events with new output, ``state`` events, then ``end``."""
    factory = request.app.state.sessionmaker
    offsets = {"stdout": 0, "stderr": 0}
    # One incremental decoder per stream: a UTF-8 character split across two reads must
    # not turn into two replacement characters.
    decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in offsets}

    def poll() -> tuple[str, bool, list[tuple[str, str]]]:
        """The job's state, then the log text written since the last poll."""
        with factory() as session:
            job = service.get_job(session=session, actor=actor, job_id=job_id)
            state, done = job.state.value, job.state.is_terminal()
            chunks = []
            for name in offsets:
                data = service.read_log(
                    settings=settings, job=job, stream=name, offset=offsets[name]
                )
                offsets[name] += len(data)
                text = decoders[name].decode(data, final=done)
                if text:
                    chunks.append((name, text))
        return state, done, chunks

    first = await run_in_threadpool(poll)  # NotFound before the stream starts

    async def events() -> AsyncIterator[str]:
        last_state = None
        state, done, chunks = first
        while True:
            for name, text in chunks:
                payload = {"stream": name, "text": text}
                yield f"event: log\ndata: {json.dumps(payload)}\n\n"
            if state != last_state:
                last_state = state
                yield f"event: state\ndata: {json.dumps({'state': state})}\n\n"
            if done:
                yield "event: end\ndata: {}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
            state, done, chunks = await run_in_threadpool(poll)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
