"""An instance's results: the files of its working copy that the manifest's ``outputs:``
globs match, listed, opened one at a time, or zipped.

Path safety has two layers. Every path goes through ``library``'s resolver with the working
copy as root (no ``..``, no symlink out of it, no FIFOs or devices) and is opened with
``O_NOFOLLOW`` at every step. And both the path asked for and the real path it leads to
must match an output glob, so an inside symlink named ``results/x.csv`` cannot hand out
``dt.yaml``. Anything else is "not one of the results" (404), whatever the reason, so the
answer does not tell what else exists in the working copy.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sqlalchemy.orm import Session
from zipstream import ZIP_DEFLATED, ZipStream

from dtaas.config import Settings
from dtaas.errors import BadRequest, DtaasError, NotFound, PermissionDenied
from dtaas.library import paths
from dtaas.lifecycle import service as lifecycle
from dtaas.lifecycle.models import Instance
from dtaas.security.permissions import Permission, Principal, require
from dtaas.services.results_schemas import PreviewKind, ResultFile, ResultListing
from dtaas.twins import service as twins

MAX_LISTED = 2_000
MAX_SCANNED = 50_000  # entries looked at while listing: a huge working copy stays cheap
CHUNK = 256 * 1024
KINDS: dict[str, PreviewKind] = {
    **dict.fromkeys(("csv", "tsv"), "csv"),
    **dict.fromkeys(("png", "jpg", "jpeg", "gif", "webp", "svg"), "image"),
    **dict.fromkeys(("md", "markdown"), "markdown"),
    **dict.fromkeys(
        ("txt", "log", "json", "yaml", "yml", "toml", "ini", "cfg", "py", "out", "err", "xml"),
        "text",
    ),
}
_GLOB_SPECIALS = frozenset("*?[")


@lru_cache(maxsize=256)
def glob_pattern(glob: str) -> re.Pattern[str]:
    """A regular expression for a ``/``-separated glob: ``*`` and ``?`` stay inside one
    folder, ``**`` as a whole component spans any number of folders, ``[...]`` is a set."""
    out: list[str] = []
    parts = glob.split("/")
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        out.append(_component(part))
        if not last:
            out.append("/")
    return re.compile("".join(out) + r"\Z")


def _component(part: str) -> str:
    out, index = [], 0
    while index < len(part):
        char = part[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (close := part.find("]", index + 2)) != -1:
            inner = part[index + 1 : close]
            negate = inner.startswith("!")
            body = re.escape(inner[1:] if negate else inner).replace(r"\-", "-")
            out.append(f"[{'^' if negate else ''}{body}]")
            index = close
        else:
            out.append(re.escape(char))
        index += 1
    return "".join(out)


def _fixed_prefix(glob: str) -> str:
    """The folders at the start of a glob without wildcards: where its matches can be."""
    fixed = []
    for part in glob.split("/")[:-1]:
        if _GLOB_SPECIALS.intersection(part):
            break
        fixed.append(part)
    return "/".join(fixed)


def kind_of(path: str) -> PreviewKind:
    return KINDS.get(PurePosixPath(path).suffix.lower().lstrip("."), "other")


def media_type_of(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    if kind_of(path) in ("csv", "markdown", "text"):
        return f"{guessed or 'text/plain'}; charset=utf-8"
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class Outputs:
    """Where an instance's results are and which globs say what they are."""

    instance: Instance
    root: Path
    globs: tuple[str, ...]

    def matches(self, relative: str) -> bool:
        return any(glob_pattern(glob).match(relative) for glob in self.globs)


def outputs_of(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int
) -> Outputs:
    """The instance's working copy and output globs (none once it has been cleaned).

    Raises: PermissionDenied; NotFound.
    """
    require(actor, Permission.READ)
    instance = lifecycle.get_instance(session=session, actor=actor, instance_id=instance_id)
    root = lifecycle.working_copy(settings, instance)
    manifest = twins.manifest_in(root) if root.is_dir() else None
    globs = tuple(manifest.outputs) if manifest is not None else ()
    return Outputs(instance=instance, root=root, globs=globs)


def list_results(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int
) -> ResultListing:
    """The result files of an instance, by path (at most ``MAX_LISTED``).

    Raises: PermissionDenied; NotFound.
    """
    outputs = outputs_of(session=session, settings=settings, actor=actor, instance_id=instance_id)
    files: list[ResultFile] = []
    truncated = False
    if outputs.globs and outputs.root.is_dir():
        for relative in _candidates(outputs):
            checked = _checked(outputs, relative)
            if checked is None:
                continue
            if len(files) == MAX_LISTED:
                truncated = True
                break
            files.append(checked)
    files.sort(key=lambda item: item.path)
    return ResultListing(
        instance_id=instance_id, outputs=list(outputs.globs), files=files, truncated=truncated
    )


def _candidates(outputs: Outputs) -> Iterator[str]:
    """Relative paths of files (and symlinks) under the globs' fixed folders that a glob
    matches; symlinked folders are not entered."""
    starts = sorted({_fixed_prefix(glob) for glob in outputs.globs})
    # A start inside another start is walked with it.
    starts = [s for s in starts if not any(s.startswith(f"{o}/") for o in starts if o and o != s)]
    if "" in starts:
        starts = [""]
    scanned = 0
    for start in starts:
        top = outputs.root / start if start else outputs.root
        if top.is_symlink() or not top.is_dir():
            continue
        for folder, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(paths.HIDDEN_PREFIX))
            base = Path(folder).relative_to(outputs.root).as_posix()
            for name in sorted(filenames):
                scanned += 1
                if scanned > MAX_SCANNED:
                    return
                relative = name if base == "." else f"{base}/{name}"
                if not name.startswith(paths.HIDDEN_PREFIX) and outputs.matches(relative):
                    yield relative


def _checked(outputs: Outputs, relative: str) -> ResultFile | None:
    """The file at ``relative`` if it is a result, or None."""
    try:
        real_relative = _resolve(outputs, relative)
    except DtaasError:
        return None
    info = (outputs.root / real_relative).stat()
    if not stat.S_ISREG(info.st_mode):
        return None
    return ResultFile(
        path=relative,
        size=info.st_size,
        modified_at=datetime.fromtimestamp(info.st_mtime, UTC),
        kind=kind_of(relative),
        media_type=media_type_of(relative),
    )


def _not_a_result(path: str, outputs: Outputs) -> NotFound:
    if not outputs.globs:
        return NotFound(
            f"{path[:200]!r} is not one of the results: this DT declares no `outputs:` in its "
            "dt.yaml (or its working copy was cleaned).",
            loc=["query", "path"],
        )
    return NotFound(
        f"{path[:200]!r} is not one of the results; results are the files matching "
        f"{', '.join(outputs.globs)} in the working copy.",
        loc=["query", "path"],
    )


def _resolve(outputs: Outputs, path: str) -> str:
    """The real relative path of the result ``path`` names.

    Raises: BadRequest for a malformed path; NotFound for anything that is not a result.
    """
    wanted = "/".join(part for part in path.split("/") if part not in ("", "."))
    try:
        real = paths.resolve(root=outputs.root, path=path)
    except BadRequest as exc:
        # The resolver speaks of libraries; here the root is the instance's working copy.
        message = exc.message.replace("the library root", "the working copy")
        raise BadRequest(
            message.replace("'models/tank.fmu'", "'results/data.csv'"), loc=["query", "path"]
        ) from None
    except (PermissionDenied, NotFound, FileNotFoundError):
        raise _not_a_result(path, outputs) from None
    real_relative = paths.to_relative(root=outputs.root, real=real)
    if not (outputs.matches(wanted) and outputs.matches(real_relative)):
        raise _not_a_result(path, outputs)
    return real_relative


@dataclass
class OpenedResult:
    """An open result file; the caller reads and closes ``handle``."""

    path: str
    name: str
    size: int
    media_type: str
    kind: PreviewKind
    handle: BinaryIO

    def chunks(self) -> Iterator[bytes]:
        """The file's first ``size`` bytes in chunks; closes it at the end.

        A running DT may still append to its results: what was there when the file was
        opened is sent, so the response matches the Content-Length it announced.
        """
        left = self.size
        with self.handle:
            while left > 0 and (chunk := self.handle.read(min(CHUNK, left))):
                left -= len(chunk)
                yield chunk


def open_result(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int, path: str
) -> OpenedResult:
    """Open one result file for reading.

    Raises: PermissionDenied; BadRequest for a malformed path; NotFound for an instance or
    a path that is not a result.
    """
    outputs = outputs_of(session=session, settings=settings, actor=actor, instance_id=instance_id)
    if not path.strip("/"):
        raise BadRequest(
            "Give the path of a result file, e.g. results/data.csv.", loc=["query", "path"]
        )
    real_relative = _resolve(outputs, path)
    fd = paths.open_beneath(root=outputs.root, path=real_relative, flags=os.O_RDONLY)
    handle = os.fdopen(fd, "rb")
    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode):
        handle.close()
        raise _not_a_result(path, outputs)
    return OpenedResult(
        path=path,
        name=PurePosixPath(real_relative).name,
        size=info.st_size,
        media_type=media_type_of(path),
        kind=kind_of(path),
        handle=handle,
    )


def zip_results(
    *, session: Session, settings: Settings, actor: Principal, instance_id: int
) -> tuple[str, Iterator[bytes]]:
    """Every result file in one zip, built while it is sent; returns its name and bytes.

    Raises: PermissionDenied; NotFound for the instance, or when it has no results.
    """
    listing = list_results(session=session, settings=settings, actor=actor, instance_id=instance_id)
    if not listing.files:
        raise NotFound(
            f"Instance {instance_id} has no result files to download"
            + (f" (none match {', '.join(listing.outputs)})." if listing.outputs else "."),
            loc=["instance_id"],
        )
    outputs = outputs_of(session=session, settings=settings, actor=actor, instance_id=instance_id)
    stream = ZipStream(compress_type=ZIP_DEFLATED, sized=False)
    for item in listing.files:
        stream.add(_file_chunks(outputs, item.path), item.path)
    return f"instance-{instance_id}-results.zip", iter(stream)


def _file_chunks(outputs: Outputs, path: str) -> Iterator[bytes]:
    """A result's bytes, opened only when the zip reaches it (not all files at once)."""
    try:
        fd = paths.open_beneath(root=outputs.root, path=_resolve(outputs, path), flags=os.O_RDONLY)
    except DtaasError:
        return  # removed or replaced since it was listed: an empty entry, not a broken zip
    with os.fdopen(fd, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk
