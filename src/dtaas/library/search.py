"""Finding assets by name or by the text inside them, bounded in time and results."""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from dtaas.config import Settings
from dtaas.errors import InvalidInput
from dtaas.library.access import locate, readable_areas
from dtaas.library.paths import HIDDEN_PREFIX
from dtaas.library.schemas import EntryType, SearchHit, SearchResult
from dtaas.security.permissions import Principal

log = logging.getLogger(__name__)

MAX_TEXT_FILE_BYTES = 1024 * 1024
SNIPPET_CHARS = 200


def _walk(root: Path, area_path: str) -> Iterator[tuple[str, Path, bool]]:
    """(user path, real path, is folder) for everything under ``root``, links not followed."""
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(HIDDEN_PREFIX))
        base = Path(folder)
        relative = base.relative_to(root).as_posix()
        prefix = area_path if relative == "." else f"{area_path}/{relative}"
        for name in dirnames:
            yield f"{prefix}/{name}", base / name, True
        for name in sorted(filenames):
            if not name.startswith(HIDDEN_PREFIX):
                yield f"{prefix}/{name}", base / name, False


def _text_hits(real: Path, needle: str) -> Iterator[tuple[int, str]]:
    try:
        info = real.lstat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_TEXT_FILE_BYTES:
            return  # links, FIFOs (a read would block forever) and large files
        # O_NOFOLLOW and fstat close the gap if the file is swapped after the lstat.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return
            data = handle.read(MAX_TEXT_FILE_BYTES + 1)
    except OSError:
        return
    if b"\x00" in data[:8192]:
        return  # binary
    text = data.decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line.casefold():
            yield number, line.strip()[:SNIPPET_CHARS]


def search(
    *,
    settings: Settings,
    actor: Principal,
    query: str,
    mode: Literal["name", "text"] = "name",
    path: str | None = None,
    limit: int = 100,
    timeout_seconds: float = 5.0,
) -> SearchResult:
    """Search the caller's libraries (or one folder of them) by name or by text.

    Names match case-insensitively as a substring, or as a glob when the query has
    ``*``, ``?`` or ``[``. Text search looks at UTF-8 text files up to 1 MiB.

    Raises: InvalidInput for an empty query; BadRequest; PermissionDenied; NotFound.
    """
    needle = query.strip().casefold()
    if not needle:
        raise InvalidInput("Type something to search for.", loc=["query", "q"])
    is_glob = mode == "name" and any(c in needle for c in "*?[")
    if path:
        scopes = [locate(settings=settings, actor=actor, path=path, write=False)]
    else:
        scopes = [
            locate(settings=settings, actor=actor, path=area, write=False)
            for area in readable_areas(actor)
        ]
    deadline = time.monotonic() + timeout_seconds
    hits: list[SearchHit] = []
    truncated = False
    for scope in scopes:
        for user_path, real, is_folder in _walk(scope.real, scope.path):
            if len(hits) > limit:
                break
            if time.monotonic() > deadline:
                truncated = True
                break
            name = user_path.rsplit("/", 1)[-1].casefold()
            if mode == "name":
                matched = fnmatch.fnmatchcase(name, needle) if is_glob else needle in name
                if matched:
                    kind = EntryType.FOLDER if is_folder else EntryType.FILE
                    hits.append(SearchHit(path=user_path, type=kind))
            elif not is_folder:
                for line, snippet in _text_hits(real, needle):
                    hits.append(
                        SearchHit(path=user_path, type=EntryType.FILE, line=line, snippet=snippet)
                    )
                    if len(hits) > limit:
                        break
        if truncated:
            break
    log.info(
        "search mode=%s hits=%s truncated=%s actor=%s", mode, len(hits), truncated, actor.username
    )
    truncated = truncated or len(hits) > limit
    return SearchResult(query=query, mode=mode, hits=hits[:limit], truncated=truncated)
