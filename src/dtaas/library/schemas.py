"""Request and response models of the library."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

UserPath = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EntryType(StrEnum):
    FILE = "file"
    FOLDER = "folder"


class SortKey(StrEnum):
    NAME = "name"
    SIZE = "size"
    MTIME = "mtime"
    TYPE = "type"


class Entry(BaseModel):
    """A file or folder of a library."""

    name: str
    path: str
    type: EntryType
    size: int
    mtime: datetime
    kind: str | None
    description: str | None = None


class EntryDetail(Entry):
    """An entry with what a client needs to edit it."""

    etag: str
    media_type: str | None
    writable: bool


class Listing(BaseModel):
    path: str
    entries: list[Entry]
    total: int
    offset: int
    limit: int


class MakeFolder(Strict):
    path: UserPath


class MoveOrCopy(Strict):
    source: UserPath
    destination: UserPath
    overwrite: bool = False


class Uploaded(BaseModel):
    files: list[Entry]
    extracted: list[str] = Field(default_factory=list, description="Folders unpacked from zips.")


class SearchHit(BaseModel):
    path: str
    type: EntryType
    line: int | None = None
    snippet: str | None = None


class SearchResult(BaseModel):
    query: str
    mode: Literal["name", "text"]
    hits: list[SearchHit]
    truncated: bool = Field(description="True when the result or time bound stopped the search.")
