"""The admin page of the Ray cluster: whether one is configured, its dashboard, its resources.

The page never talks to the cluster itself: it renders at once, and ``static/cluster.js``
fills in the nodes and resources from ``GET /api/v1/admin/cluster`` every few seconds, so a
dead or slow cluster shows as "unreachable" without holding the page up.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from dtaas.security.deps import MetricsReader, SettingsDep
from dtaas.web.pages import render

router = APIRouter(include_in_schema=False)

REFRESH_SECONDS = 5


@router.get("/admin/cluster", response_class=HTMLResponse)
def cluster_page(request: Request, settings: SettingsDep, actor: MetricsReader) -> HTMLResponse:
    """The Ray cluster (admins; a 403 page for others)."""
    return render(
        request,
        "cluster.html",
        actor=actor,
        dashboard_url=settings.ray_address,
        default_executor=settings.executor,
        refresh_seconds=REFRESH_SECONDS,
    )
