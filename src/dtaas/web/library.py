"""The Library page: a tab per kind, private and common assets, a file tree and previews."""

from __future__ import annotations

import csv
import io
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from markdown_it import MarkdownIt
from markupsafe import Markup
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import TextLexer, guess_lexer_for_filename
from pygments.util import ClassNotFound

from dtaas.errors import BadRequest
from dtaas.library import service as library
from dtaas.library.access import COMMON, KINDS
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.security.permissions import Principal
from dtaas.web.pages import render

router = APIRouter(include_in_schema=False)

KIND_LABELS = {
    "functions": "Functions",
    "models": "Models",
    "tools": "Tools",
    "data": "Data",
    "digital_twins": "Digital Twins",
}
IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml"}
PREVIEW_MAX_BYTES = 1024 * 1024
CSV_MAX_ROWS = 200

# Raw HTML in Markdown stays escaped, and markdown-it refuses javascript: links.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_formatter = HtmlFormatter(nowrap=False, cssclass="highlight")
PYGMENTS_CSS: str = _formatter.get_style_defs(".highlight")  # type: ignore[no-untyped-call]  # untyped in the stubs

Scope = Literal["private", "common"]


def _root(actor: Principal, scope: Scope, kind: str) -> str:
    area = COMMON if scope == "common" else actor.username
    return f"{area}/{kind}"


def _breadcrumbs(path: str) -> list[tuple[str, str]]:
    parts = path.split("/")
    return [(part, "/".join(parts[: index + 1])) for index, part in enumerate(parts)][1:]


def page_url(path: str) -> str:
    """The Library page opened on the folder ``path``, so a reload or link returns there."""
    area, _, inner = path.partition("/")
    kind = inner.split("/", 1)[0]
    scope = "common" if area == COMMON else "private"
    return "/library?" + urlencode({"kind": kind, "scope": scope, "path": path})


@router.get("/library/highlight.css")
def highlight_css(actor: CurrentActor) -> Response:
    """Pygments' colours for highlighted previews, as a file so pages need no inline style."""
    del actor  # like every page, only for signed-in users
    return Response(
        PYGMENTS_CSS, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"}
    )


@router.get("/library", response_class=HTMLResponse)
def library_page(
    request: Request,
    settings: SettingsDep,
    actor: CurrentActor,
    kind: Annotated[str, Query(max_length=32)] = "models",
    scope: Scope = "private",
    path: Annotated[str, Query(max_length=4096)] = "",
) -> HTMLResponse:
    """The library: tabs per kind, private or common, the folder and a preview pane."""
    if kind not in KINDS:
        raise BadRequest(f"Unknown kind {kind!r}; use one of {', '.join(KINDS)}.", loc=["kind"])
    root = _root(actor, scope, kind)
    folder = path if path.startswith(root + "/") or path == root else root
    listing = library.list_folder(settings=settings, actor=actor, path=folder)
    info = library.stat_entry(settings=settings, actor=actor, path=folder)
    return render(
        request,
        "library.html",
        actor=actor,
        kinds=KIND_LABELS,
        kind=kind,
        scope=scope,
        root=root,
        listing=listing,
        writable=info.writable,
        breadcrumbs=_breadcrumbs(listing.path),
        page_url=page_url,
    )


@router.get("/library/listing", response_class=HTMLResponse)
def library_listing(
    request: Request,
    settings: SettingsDep,
    actor: CurrentActor,
    path: Annotated[str, Query(max_length=4096)],
) -> HTMLResponse:
    """The folder table (htmx fragment)."""
    listing = library.list_folder(settings=settings, actor=actor, path=path)
    info = library.stat_entry(settings=settings, actor=actor, path=path)
    return render(
        request,
        "_library_listing.html",
        actor=actor,
        listing=listing,
        writable=info.writable,
        breadcrumbs=_breadcrumbs(listing.path),
        page_url=page_url,
    )


def _csv_rows(data: bytes) -> list[list[str]]:
    text = data.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text))
    return [row for _, row in zip(range(CSV_MAX_ROWS + 1), reader, strict=False)]


@router.get("/library/preview", response_class=HTMLResponse)
def library_preview(
    request: Request,
    settings: SettingsDep,
    actor: CurrentActor,
    path: Annotated[str, Query(max_length=4096)],
) -> HTMLResponse:
    """A file's preview: Markdown, highlighted text, an image or a CSV table (htmx fragment)."""
    location, detail = library.open_file(settings=settings, actor=actor, path=path)
    context: dict[str, Any] = {"entry": detail, "mode": "binary"}
    media_type = detail.media_type or ""
    if media_type in IMAGE_TYPES:
        context["mode"] = "image"
    elif detail.size > PREVIEW_MAX_BYTES:
        context.update(mode="too_large", limit=PREVIEW_MAX_BYTES)
    else:
        data = location.real.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and "\x00" not in text[:8192]:
            context["text"] = text
            name = detail.name.lower()
            if name.endswith((".md", ".markdown")):
                context["mode"] = "markdown"
                context["html"] = Markup(_markdown.render(text))  # noqa: S704  # html disabled
            elif name.endswith(".csv"):
                rows = _csv_rows(data)
                context.update(mode="csv", rows=rows[:CSV_MAX_ROWS], more=len(rows) > CSV_MAX_ROWS)
            else:
                try:
                    lexer = guess_lexer_for_filename(detail.name, text)
                except ClassNotFound:
                    lexer = TextLexer()
                context["mode"] = "text"
                context["html"] = Markup(highlight(text, lexer, _formatter))  # noqa: S704  # escaped by Pygments
    return render(request, "_library_preview.html", actor=actor, **context)
