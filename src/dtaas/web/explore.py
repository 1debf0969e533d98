"""An instance's Explore page: live telemetry charts, the latest job's log and the results.

The charts are drawn in the browser (``static/explore.js``, uPlot) from the telemetry API
and its Server-Sent Events; this module renders the page and the results' fragments.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from dtaas.db import SessionDep
from dtaas.lifecycle import service as lifecycle
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.services import mqtt_names, results, results_preview, telemetry_query
from dtaas.services.service import TOPIC_PREFIX_VAR
from dtaas.web.instances import NAV_HREF, Formats
from dtaas.web.pages import render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

ResultPath = Annotated[str, Query(min_length=1, max_length=4096)]


@router.get("/instances/{instance_id}/explore", response_class=HTMLResponse)
def explore_page(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """Charts of the instance's telemetry, its latest job's log and its result files."""
    instance = lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    fields = telemetry_query.list_fields(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )
    others = [
        {"id": other.id, "name": other.name}
        for other in lifecycle.list_instances(session=session, actor=actor)
        if other.id != instance.id
    ]
    jobs = list(instance.jobs)
    config = {
        "instanceId": instance.id,
        "fields": [item.model_dump(include={"field", "label", "unit"}) for item in fields.fields],
        "others": others,
        "job": {"id": jobs[-1].id, "phase": jobs[-1].phase} if jobs else None,
    }
    return render(
        request,
        "explore.html",
        actor=actor,
        path=NAV_HREF,
        instance=instance,
        fields=fields.fields,
        others=others,
        listing=results.list_results(
            session=session, settings=settings, actor=actor, instance_id=instance_id
        ),
        topic_prefix=mqtt_names.topic_prefix(instance.owner_name, instance.id),
        topic_prefix_var=TOPIC_PREFIX_VAR,
        latest=jobs[-1] if jobs else None,
        config=config,  # tojson in the template escapes '<' so no name can end the script
        fmt=Formats,
    )


@router.get("/instances/{instance_id}/explore/results", response_class=HTMLResponse)
def results_fragment(
    request: Request,
    instance_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """The results table (htmx fragment, refreshed on demand)."""
    return render(
        request,
        "_explore_results.html",
        actor=actor,
        instance_id=instance_id,
        listing=results.list_results(
            session=session, settings=settings, actor=actor, instance_id=instance_id
        ),
        fmt=Formats,
    )


@router.get("/instances/{instance_id}/explore/preview", response_class=HTMLResponse)
def preview_fragment(
    request: Request,
    instance_id: int,
    path: ResultPath,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """A result's preview (htmx fragment): CSV table and plot, image, Markdown or text."""
    preview = results_preview.preview_result(
        session=session, settings=settings, actor=actor, instance_id=instance_id, path=path
    )
    return render(
        request,
        "_explore_preview.html",
        actor=actor,
        instance_id=instance_id,
        preview=preview,
        plot=preview.plot.model_dump_json() if preview.plot is not None else "",
        fmt=Formats,
    )
