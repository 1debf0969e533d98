"""Previews of result files: a CSV's first rows and a plot of its numeric columns, Markdown
rendered to safe HTML, the start of a text file. Every read is bounded in bytes."""

from __future__ import annotations

import csv
import io
import math
import posixpath
from collections.abc import Sequence
from itertools import pairwise
from typing import BinaryIO
from urllib.parse import quote, urlsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.security.permissions import Principal
from dtaas.services import results
from dtaas.services.results_schemas import CsvPlot, ResultPreview

PREVIEW_ROWS = 100
MAX_COLUMNS = 50
MAX_CELL = 200
PLOT_POINTS = 1_000
PLOT_SERIES = 8
CSV_READ_BYTES = 8 * 1024**2
TEXT_BYTES = 64 * 1024
MARKDOWN_BYTES = 1024**2


def preview_result(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int, path: str
) -> ResultPreview:
    """A preview of one result file.

    Raises: PermissionDenied; BadRequest; NotFound (see ``results.open_result``).
    """
    opened = results.open_result(
        session=session, settings=settings, actor=actor, instance_id=instance_id, path=path
    )
    preview = ResultPreview(
        path=opened.path, kind=opened.kind, media_type=opened.media_type, size=opened.size
    )
    with opened.handle:
        if opened.kind == "csv":
            _fill_csv(preview, opened.handle, tabs=opened.path.lower().endswith(".tsv"))
        elif opened.kind == "markdown":
            text, preview.truncated = _read_text(opened.handle, MARKDOWN_BYTES)
            preview.html = render_markdown(text, instance_id=instance_id, path=opened.path)
        elif opened.kind == "text":
            preview.text, preview.truncated = _read_text(opened.handle, TEXT_BYTES)
    return preview


def _read_text(handle: BinaryIO, limit: int) -> tuple[str, bool]:
    data = handle.read(limit + 1)
    truncated = len(data) > limit
    return data[:limit].decode("utf-8", errors="replace"), truncated


# --- CSV -------------------------------------------------------------------------------------


def _fill_csv(preview: ResultPreview, handle: BinaryIO, *, tabs: bool) -> None:
    text, truncated = _read_text(handle, CSV_READ_BYTES)
    if truncated:
        text = text[: text.rfind("\n") + 1]  # never a half line
    delimiter = "\t" if tabs else _sniff(text[:8192])
    rows = [row[:MAX_COLUMNS] for row in csv.reader(io.StringIO(text), delimiter=delimiter)]
    rows = [row for row in rows if row]
    if not rows:
        return
    header, body = rows[0], rows[1:]
    if all(_number(cell) is not None for cell in header):
        # No header line: the first line is data.
        header, body = [f"column {n}" for n in range(1, len(header) + 1)], rows
    preview.columns = [cell[:MAX_CELL] for cell in header]
    preview.rows = [[cell[:MAX_CELL] for cell in row] for row in body[:PREVIEW_ROWS]]
    preview.more_rows = len(body) > PREVIEW_ROWS or truncated
    preview.truncated = truncated
    preview.plot = _plot(preview.columns, body, complete=not truncated)


def _sniff(sample: str) -> str:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t").delimiter
    except csv.Error:
        return ","


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _numeric_columns(width: int, body: Sequence[Sequence[str]]) -> dict[int, list[float | None]]:
    """Columns whose every non-empty cell is a finite number (and that have one)."""
    columns: dict[int, list[float | None]] = {}
    for index in range(width):
        values: list[float | None] = []
        for row in body:
            cell = row[index].strip() if index < len(row) else ""
            number = _number(cell) if cell else None
            if cell and number is None:
                break
            values.append(number)
        else:
            if any(value is not None for value in values):
                columns[index] = values
    return columns


def _plot(header: list[str], body: Sequence[Sequence[str]], *, complete: bool) -> CsvPlot | None:
    columns = _numeric_columns(len(header), body)
    if not columns:
        return None
    first = [v for v in columns.get(0, []) if v is not None]
    # The first column is the x axis when it is complete and never decreases (time, step).
    if len(columns) > 1 and len(first) == len(body) and all(a <= b for a, b in pairwise(first)):
        x_label, x = header[0], first
        del columns[0]
    else:
        x_label, x = "row", [float(n) for n in range(1, len(body) + 1)]
    series = {header[i]: values for i, values in list(columns.items())[:PLOT_SERIES]}
    keep = _thin(len(x), list(series.values()), PLOT_POINTS)
    return CsvPlot(
        x_label=x_label,
        x=[x[i] for i in keep],
        series={name: [values[i] for i in keep] for name, values in series.items()},
        rows_read=len(body),
        complete=complete,
    )


def _thin(length: int, columns: list[list[float | None]], limit: int) -> list[int]:
    """Indices of at most ``limit`` rows keeping, per equal run of rows, the first row and
    the rows holding each column's smallest and largest value (spikes stay visible)."""
    if length <= limit:
        return list(range(length))
    buckets = max(1, limit // (2 * len(columns) + 1))
    size = math.ceil(length / buckets)
    keep: set[int] = set()
    for start in range(0, length, size):
        stop = min(start + size, length)
        keep.add(start)
        for values in columns:
            present = [(v, i) for i, v in enumerate(values[start:stop], start) if v is not None]
            if present:
                keep.add(min(present)[1])
                keep.add(max(present)[1])
    return sorted(keep)


# --- Markdown --------------------------------------------------------------------------------

# Raw HTML is escaped ("html": False) and markdown-it refuses javascript:, vbscript:, file:
# and (except images) data: links, so the output holds only tags Markdown itself makes.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def render_markdown(text: str, *, instance_id: int, path: str) -> str:
    """Markdown as safe HTML; relative images point at the result they name."""
    tokens = _MARKDOWN.parse(text)
    folder = posixpath.dirname(path)
    for token in tokens:
        for child in token.children or []:
            if child.type == "image":
                _point_image(child, instance_id=instance_id, folder=folder)
    html: str = _MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {})
    return html


def _point_image(token: Token, *, instance_id: int, folder: str) -> None:
    source = str(token.attrs.get("src", ""))
    parts = urlsplit(source)
    if not source or parts.scheme or parts.netloc or source.startswith(("/", "#")):
        return
    joined = posixpath.normpath(posixpath.join(folder, parts.path))
    token.attrs["src"] = (
        f"/api/v1/instances/{instance_id}/results/file?path={quote(joined, safe='/')}"
    )
