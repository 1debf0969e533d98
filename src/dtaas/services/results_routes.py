"""HTTP routes of an instance's results: listing, one file, a preview, all as a zip."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from dtaas.db import SessionDep
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.services import results, results_preview
from dtaas.services.results_schemas import ResultListing, ResultPreview

router = APIRouter(tags=["results"])

ResultPath = Annotated[
    str,
    Query(
        min_length=1,
        max_length=4096,
        description="A result's path in the working copy, e.g. results/trajectory.csv.",
    ),
]
# Results are the DT's own files served from our origin: an HTML or SVG result opened
# directly must not run scripts with the viewer's session (as the library's files).
SAFE_FILE_HEADERS = {
    "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; "
    "style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/instances/{instance_id}/results", response_model=ResultListing)
def list_results(
    instance_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> ResultListing:
    """The files of the working copy that the DT's `outputs:` globs match."""
    return results.list_results(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )


@router.get("/instances/{instance_id}/results/file", response_class=StreamingResponse)
def read_result(
    instance_id: int,
    path: ResultPath,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    download: bool = False,
) -> StreamingResponse:
    """One result file's content, streamed."""
    opened = results.open_result(
        session=session, settings=settings, actor=actor, instance_id=instance_id, path=path
    )
    disposition = "attachment" if download else "inline"
    return StreamingResponse(
        opened.chunks(),
        media_type=opened.media_type,
        headers={
            **SAFE_FILE_HEADERS,
            "Content-Length": str(opened.size),
            "Content-Disposition": f"{disposition}; filename*=utf-8''{quote(opened.name)}",
        },
    )


@router.get("/instances/{instance_id}/results/preview", response_model=ResultPreview)
def preview_result(
    instance_id: int,
    path: ResultPath,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> ResultPreview:
    """A preview: a CSV's first rows and a plot of it, Markdown as HTML, a text's start."""
    return results_preview.preview_result(
        session=session, settings=settings, actor=actor, instance_id=instance_id, path=path
    )


@router.get("/instances/{instance_id}/results.zip", response_class=StreamingResponse)
def download_results(
    instance_id: int, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> StreamingResponse:
    """Every result file in one zip, streamed while it is built."""
    name, chunks = results.zip_results(
        session=session, settings=settings, actor=actor, instance_id=instance_id
    )
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
