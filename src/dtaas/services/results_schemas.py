"""What the results API returns: an instance's result files and their previews."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

PreviewKind = Literal["csv", "image", "markdown", "text", "other"]


class ResultFile(BaseModel):
    """A file of the working copy that one of the manifest's ``outputs:`` globs matches."""

    path: str = Field(description="Relative to the instance's working copy, '/'-separated.")
    size: int
    modified_at: datetime
    kind: PreviewKind
    media_type: str


class ResultListing(BaseModel):
    """The instance's result files, by path."""

    instance_id: int
    outputs: list[str] = Field(description="The globs of the DT's dt.yaml `outputs:`.")
    files: list[ResultFile]
    truncated: bool = Field(description="More files match than are listed.")


class CsvPlot(BaseModel):
    """Numeric columns of a CSV against its first column (or the row number), thinned to
    at most a given number of rows while keeping each column's extremes."""

    x_label: str
    x: list[float]
    series: dict[str, list[float | None]]
    rows_read: int
    complete: bool = Field(description="The whole file was read (it was not too large).")


class ResultPreview(BaseModel):
    """A result shown inside the page: a CSV's first rows and plot, rendered Markdown, the
    start of a text file; images and other files are linked instead."""

    path: str
    kind: PreviewKind
    media_type: str
    size: int
    columns: list[str] = Field(default_factory=list)
    rows: list[list[str]] = Field(default_factory=list)
    more_rows: bool = False
    plot: CsvPlot | None = None
    html: str | None = Field(default=None, description="Sanitised HTML (Markdown).")
    text: str | None = None
    truncated: bool = False
