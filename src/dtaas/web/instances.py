"""The Instances pages: your instances with live state, deploying a DT, and an instance's page.

An instance's page shows what its state allows as buttons that post to the thin routes
below; the live log comes from the API's Server-Sent Events (``static/instances.js``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.db import SessionDep
from dtaas.lifecycle import service as lifecycle
from dtaas.lifecycle import snapshots
from dtaas.lifecycle.models import Instance, InstanceState, Job, JobState, Snapshot
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.security.permissions import Permission, Principal
from dtaas.twins import service as twins
from dtaas.web.pages import render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

NAV_HREF = "/instances"  # an instance's page highlights "Instances" in the navigation
# Phases with their own buttons (and service commands) rather than a plain phase button.
END_PHASES = ("terminate", "clean")
CANCELLABLE = (JobState.QUEUED, JobState.STARTING, JobState.RUNNING)

PhaseName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


@dataclass(frozen=True, slots=True)
class Allowed:
    """What the buttons of an instance may do now: the state machine of ``lifecycle``."""

    run: bool
    terminate: bool
    clean: bool
    delete: bool
    cancel: bool

    @classmethod
    def of(cls, actor: Principal, instance: Instance, active: Job | None) -> Allowed:
        if not actor.has(Permission.OPERATE):
            return cls(run=False, terminate=False, clean=False, delete=False, cancel=False)
        state = instance.state
        return cls(
            run=state == InstanceState.READY,
            terminate=state in (InstanceState.READY, InstanceState.BUSY),
            clean=state in (InstanceState.READY, InstanceState.TERMINATED),
            # The service would also delete a ready instance; like its ALLOWED hints, the page
            # offers Delete only once the DT has been terminated.
            delete=state in (InstanceState.TERMINATED, InstanceState.CLEANED),
            cancel=state in (InstanceState.BUSY, InstanceState.CLEANING)
            and active is not None
            and active.state in CANCELLABLE,
        )


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as a row of the history, with its place in the queue while it waits."""

    job: Job
    queue_position: int | None


# --- formatting for the templates ------------------------------------------------------------

NO_VALUE = "\N{EN DASH}"


class Formats:
    """How the templates show times, durations, sizes and links (``fmt`` in a template)."""

    @staticmethod
    def when(moment: datetime | None) -> str:
        """A timestamp as UTC, to the second."""
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else NO_VALUE

    @staticmethod
    def clock(moment: datetime | None) -> str:
        """Only the time of day (UTC); the full timestamp goes into a title."""
        return moment.strftime("%H:%M:%S") if moment is not None else NO_VALUE

    @staticmethod
    def seconds(value: float | None) -> str:
        if value is None:
            return NO_VALUE
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"

    @staticmethod
    def memory(value: int | None) -> str:
        if value is None:
            return NO_VALUE
        mib = value / 1024**2
        return f"{mib:.1f} MiB" if mib < 100 else f"{mib:.0f} MiB"

    @staticmethod
    def size(value: int | None) -> str:
        if value is None:
            return NO_VALUE
        for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if value >= scale:
                return f"{value / scale:.1f} {unit}"
        return f"{value} B"

    @staticmethod
    def twin_url(path: str) -> str:
        return "/twins/view?path=" + quote(path, safe="/")


# --- helpers ---------------------------------------------------------------------------------


def _phase_buttons(settings: Settings, instance: Instance) -> list[str]:
    """The phases to offer; after clean the working copy is gone, so the ones that ran."""
    phases = lifecycle.available_phases(settings, instance)
    if not phases:
        phases = list(dict.fromkeys(job.phase for job in instance.jobs))
    return [
        phase
        for phase in phases
        if phase not in END_PHASES and phase not in lifecycle.PLATFORM_PHASES
    ]


def _live(
    request: Request,
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    instance_id: int,
    template: str = "_instance_live.html",
) -> HTMLResponse:
    """The instance's state, buttons and job history, as a page or the polled fragment."""
    instance = lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    saved = snapshots.list_snapshots(session=session, actor=actor, instance_id=instance_id)
    jobs = list(instance.jobs)
    active = next((job for job in reversed(jobs) if job.state in lifecycle.ACTIVE), None)
    current = active or (jobs[-1] if jobs else None)
    return render(
        request,
        template,
        actor=actor,
        path=NAV_HREF,
        instance=instance,
        phases=_phase_buttons(settings, instance),
        rows=[
            JobRow(job=job, queue_position=lifecycle.queue_position(session=session, job=job))
            for job in reversed(jobs)
        ],
        active=active,
        current=current,
        allowed=Allowed.of(actor, instance, active),
        snapshots=saved,
        can_save=actor.has(Permission.OPERATE)
        and instance.state in snapshots.SAVABLE
        and not any(snapshot.state in snapshots.IN_PROGRESS for snapshot in saved),
        hint=lifecycle.ALLOWED[instance.state],
        can_operate=actor.has(Permission.OPERATE),
        fmt=Formats,
    )


def _go(request: Request, url: str) -> Response:
    if "HX-Request" in request.headers:
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# --- the list and the deploy form ------------------------------------------------------------


@router.get("/instances", response_class=HTMLResponse)
def instances_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    twin: Annotated[str, Query(max_length=1024)] = "",
) -> HTMLResponse:
    """Your instances with their live state, and the form to deploy a DT."""
    listed = twins.list_twins(settings=settings, actor=actor)
    chosen = twin if any(t.path == twin for t in listed) else ""
    return render(
        request,
        "instances.html",
        actor=actor,
        instances=lifecycle.list_instances(session=session, actor=actor),
        mine=[t for t in listed if t.area == actor.username],
        common=[t for t in listed if t.area != actor.username],
        chosen=chosen,
        configurations=(
            twins.list_configurations(session=session, settings=settings, actor=actor, path=chosen)
            if chosen
            else []
        ),
        can_operate=actor.has(Permission.OPERATE),
        fmt=Formats,
    )


@router.get("/instances/table", response_class=HTMLResponse)
def instances_table(request: Request, session: SessionDep, actor: CurrentActor) -> HTMLResponse:
    """The instances table (htmx fragment, polled)."""
    return render(
        request,
        "_instances_table.html",
        actor=actor,
        instances=lifecycle.list_instances(session=session, actor=actor),
        fmt=Formats,
    )


@router.get("/instances/configurations", response_class=HTMLResponse)
def deploy_configurations(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    twin_path: Annotated[str, Query(max_length=1024)] = "",
) -> HTMLResponse:
    """The saved configurations of the chosen DT, as the form's select (htmx fragment)."""
    configurations = (
        twins.list_configurations(session=session, settings=settings, actor=actor, path=twin_path)
        if twin_path
        else []
    )
    return render(
        request,
        "_instance_configurations.html",
        actor=actor,
        chosen=twin_path,
        configurations=configurations,
    )


@router.post("/instances")
def deploy(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    twin_path: Annotated[str, Form(min_length=1, max_length=1024)],
    configuration_id: Annotated[int | None, Form()] = None,
    name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Deploy a DT, then open the new instance's page."""
    instance = lifecycle.create_instance(
        session=session,
        settings=settings,
        actor=actor,
        twin_path=twin_path,
        configuration_id=configuration_id,
        name=name.strip() or None,
    )
    return _go(request, f"/instances/{instance.id}")


# --- an instance -----------------------------------------------------------------------------


@router.post("/instances/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel_job(
    request: Request, job_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> HTMLResponse:
    """Ask a job to stop (htmx fragment: the instance's refreshed state)."""
    job = lifecycle.cancel_job(session=session, actor=actor, job_id=job_id)
    return _live(
        request, session=session, settings=settings, actor=actor, instance_id=job.instance_id
    )


@router.get("/instances/{instance_id}", response_class=HTMLResponse)
def instance_page(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """An instance: its state, the buttons it allows, the live log and the job history."""
    return _live(
        request,
        session=session,
        settings=settings,
        actor=actor,
        instance_id=instance_id,
        template="instances_view.html",
    )


@router.get("/instances/{instance_id}/live", response_class=HTMLResponse)
def instance_live(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """State, buttons and history (htmx fragment, polled)."""
    return _live(request, session=session, settings=settings, actor=actor, instance_id=instance_id)


@router.post("/instances/{instance_id}/phases/{phase}", response_class=HTMLResponse)
def run_phase(
    request: Request,
    instance_id: int,
    phase: PhaseName,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """Queue a phase (htmx fragment: the instance's refreshed state)."""
    lifecycle.run_phase(
        session=session, settings=settings, actor=actor, instance_id=instance_id, phase=phase
    )
    return _live(request, session=session, settings=settings, actor=actor, instance_id=instance_id)


@router.post("/instances/{instance_id}/terminate", response_class=HTMLResponse)
def terminate(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """Stop what runs and run terminate (htmx fragment: the instance's refreshed state)."""
    lifecycle.terminate(session=session, settings=settings, actor=actor, instance_id=instance_id)
    return _live(request, session=session, settings=settings, actor=actor, instance_id=instance_id)


@router.post("/instances/{instance_id}/clean", response_class=HTMLResponse)
def clean(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """Run clean and remove the working copy (htmx fragment: the refreshed state)."""
    lifecycle.clean(session=session, settings=settings, actor=actor, instance_id=instance_id)
    return _live(request, session=session, settings=settings, actor=actor, instance_id=instance_id)


@router.post("/instances/{instance_id}/snapshots", response_class=HTMLResponse)
def save_instance(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """Take a snapshot (htmx fragment: the instance's refreshed state and snapshots)."""
    snapshots.create_snapshot(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )
    return _live(request, session=session, settings=settings, actor=actor, instance_id=instance_id)


@router.post("/snapshots/{snapshot_id}/respawn")
def respawn(
    request: Request,
    snapshot_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> Response:
    """A new instance from the snapshot; the browser goes to its page."""
    instance = snapshots.respawn(
        session=session, settings=settings, actor=actor, snapshot_id=snapshot_id
    )
    return _go(request, f"/instances/{instance.id}")


@router.delete("/snapshots/{snapshot_id}", response_class=HTMLResponse)
def delete_snapshot(
    request: Request,
    snapshot_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> Response:
    """Delete a snapshot (htmx fragment: its instance's refreshed state)."""
    snapshot: Snapshot = snapshots.get_snapshot(
        session=session, actor=actor, snapshot_id=snapshot_id
    )
    instance_id = snapshot.instance_id
    snapshots.delete_snapshot(
        session=session, settings=settings, actor=actor, snapshot_id=snapshot_id
    )
    if instance_id is None:
        return Response(status_code=200)
    return _live(request, session=session, settings=settings, actor=actor, instance_id=instance_id)


@router.delete("/instances/{instance_id}")
def delete_instance(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> Response:
    """Forget an instance and its history, then return to the list."""
    lifecycle.delete_instance(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )
    return _go(request, NAV_HREF)
