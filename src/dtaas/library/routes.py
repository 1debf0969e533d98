"""HTTP routes of the library: REST under /api/v1/library and the reference GraphQL at /lib."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from dtaas.accounting.deps import StorageBudgetDep
from dtaas.library import graphql, search, service, transfer
from dtaas.library.schemas import (
    EntryDetail,
    Listing,
    MakeFolder,
    MoveOrCopy,
    SearchResult,
    SortKey,
    Uploaded,
)
from dtaas.security.deps import CurrentActor, SettingsDep

router = APIRouter(prefix="/library", tags=["library"])
graphql_router = APIRouter(tags=["library"])

PathQuery = Annotated[
    str,
    Query(
        max_length=4096,
        description="A library path: <username>/... or common/..., e.g. alice/models/tank.fmu",
    ),
]


async def raw_body(request: Request) -> bytes:
    """The request body as bytes (bounded by the body-limit middleware)."""
    return await request.body()


@router.get("/entries", response_model=Listing)
def list_entries(
    settings: SettingsDep,
    actor: CurrentActor,
    path: PathQuery = "",
    sort: SortKey = SortKey.NAME,
    descending: bool = False,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=service.MAX_LIMIT)] = 200,
) -> Listing:
    """List a folder; the empty path lists your library and common."""
    return service.list_folder(
        settings=settings,
        actor=actor,
        path=path,
        sort=sort,
        descending=descending,
        offset=offset,
        limit=limit,
    )


@router.get("/stat", response_model=EntryDetail)
def stat_entry(settings: SettingsDep, actor: CurrentActor, path: PathQuery) -> EntryDetail:
    """Metadata of a file or folder, with its ETag and description."""
    return service.stat_entry(settings=settings, actor=actor, path=path)


@router.get("/file", response_class=FileResponse)
def read_file(
    settings: SettingsDep,
    actor: CurrentActor,
    path: PathQuery,
    download: bool = False,
) -> FileResponse:
    """A file's content, streamed; honours Range and sends an ETag for later edits."""
    location, detail = service.open_file(settings=settings, actor=actor, path=path)
    return FileResponse(
        location.real,
        media_type=detail.media_type or "application/octet-stream",
        filename=detail.name if download else None,
        content_disposition_type="attachment" if download else "inline",
        headers={
            "ETag": detail.etag,
            "Cache-Control": "no-cache",
            # User files are served from our origin: an uploaded HTML or SVG file opened
            # directly must not run scripts with the viewer's session.
            "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' data:; "
            "style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.put("/file", response_model=EntryDetail)
def write_file(
    response: Response,
    settings: SettingsDep,
    actor: CurrentActor,
    path: PathQuery,
    content: Annotated[bytes, Depends(raw_body)],
    budget: StorageBudgetDep,
    if_match: Annotated[str | None, Header()] = None,
) -> EntryDetail:
    """Create or replace a text file; replacing needs If-Match with the ETag you read."""
    detail = service.write_text(
        settings=settings,
        actor=actor,
        path=path,
        content=content,
        if_match=if_match,
        max_bytes=settings.edit_max_bytes,
        budget=budget,
    )
    response.headers["ETag"] = detail.etag
    return detail


@router.post("/upload", response_model=Uploaded, status_code=201)
async def upload(
    request: Request,
    settings: SettingsDep,
    actor: CurrentActor,
    path: PathQuery,
    budget: StorageBudgetDep,
    overwrite: bool = False,
    extract: Annotated[bool, Query(description="Unpack .zip files into folders.")] = False,
) -> Uploaded:
    """Upload files (multipart 'files' parts) into a folder, streamed to disk; refused
    (and nothing kept) as soon as the files would pass your storage quota."""
    receiver = await run_in_threadpool(
        lambda: transfer.UploadReceiver(
            settings=settings,
            actor=actor,
            folder=path,
            content_type=request.headers.get("content-type", ""),
            overwrite=overwrite,
            extract_zips=extract,
            budget=budget,
        )
    )
    limits = transfer.ZipLimits(
        max_entries=settings.zip_max_entries,
        max_total_bytes=settings.zip_max_total_bytes,
        max_ratio=settings.zip_max_ratio,
    )
    try:
        async for chunk in request.stream():
            await run_in_threadpool(receiver.write, chunk)
        return await run_in_threadpool(lambda: receiver.finish(zip_limits=limits))
    except BaseException:
        receiver.abort()
        raise


@router.post("/folders", response_model=EntryDetail, status_code=201)
def make_folder(body: MakeFolder, settings: SettingsDep, actor: CurrentActor) -> EntryDetail:
    """Create a folder."""
    return service.make_folder(settings=settings, actor=actor, path=body.path)


@router.post("/move", response_model=EntryDetail)
def move(
    body: MoveOrCopy, settings: SettingsDep, actor: CurrentActor, budget: StorageBudgetDep
) -> EntryDetail:
    """Rename or move a file or folder."""
    return service.move(
        settings=settings,
        actor=actor,
        source=body.source,
        destination=body.destination,
        overwrite=body.overwrite,
        budget=budget,
    )


@router.post("/copy", response_model=EntryDetail, status_code=201)
def copy(
    body: MoveOrCopy, settings: SettingsDep, actor: CurrentActor, budget: StorageBudgetDep
) -> EntryDetail:
    """Copy a file or folder, e.g. from common/ into your library."""
    return service.copy(
        settings=settings,
        actor=actor,
        source=body.source,
        destination=body.destination,
        overwrite=body.overwrite,
        budget=budget,
    )


@router.delete("/entries", status_code=204)
def delete(
    settings: SettingsDep,
    actor: CurrentActor,
    path: PathQuery,
    budget: StorageBudgetDep,
    recursive: bool = False,
) -> None:
    """Delete a file, or a folder with recursive=true."""
    service.delete(settings=settings, actor=actor, path=path, recursive=recursive, budget=budget)


@router.get("/archive", response_class=StreamingResponse)
def download_folder(settings: SettingsDep, actor: CurrentActor, path: PathQuery) -> Response:
    """A folder as a zip, streamed while it is built."""
    name, chunks = transfer.zip_folder(settings=settings, actor=actor, path=path)
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/search", response_model=SearchResult)
def search_library(
    settings: SettingsDep,
    actor: CurrentActor,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    mode: Literal["name", "text"] = "name",
    path: PathQuery = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> SearchResult:
    """Search your library and common by name (substring or glob) or by text."""
    return search.search(
        settings=settings,
        actor=actor,
        query=q,
        mode=mode,
        path=path or None,
        limit=limit,
        timeout_seconds=settings.search_timeout_seconds,
    )


class GraphQLRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=100_000)
    variables: dict[str, Any] | None = None
    operationName: str | None = None  # the GraphQL wire name


@graphql_router.post("/lib")
def library_graphql(
    body: Annotated[GraphQLRequest, Body()], settings: SettingsDep, actor: CurrentActor
) -> dict[str, Any]:
    """The reference platform's library API: listDirectory and readFile."""
    return graphql.execute(
        settings=settings,
        actor=actor,
        query=body.query,
        variables=body.variables,
        operation_name=body.operationName,
    )
