"""Browsing and authoring a library: list, stat, edit, mkdir, move, copy, delete."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mimetypes
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dtaas.accounting.budget import StorageBudget
from dtaas.config import Settings
from dtaas.errors import (
    Conflict,
    DtaasError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    PreconditionFailed,
    PreconditionRequired,
)
from dtaas.library.access import (
    COMMON,
    KINDS,
    Location,
    check_area,
    ensure_area,
    locate,
    readable_areas,
)
from dtaas.library.paths import HIDDEN_PREFIX
from dtaas.library.schemas import Entry, EntryDetail, EntryType, Listing, SortKey
from dtaas.security.permissions import Principal

log = logging.getLogger(__name__)

DESCRIPTION_FILES = ("description.md", "README.md")
MAX_LIMIT = 1000


def ensure_library(*, settings: Settings, username: str) -> None:
    """Create a user's library (the five kind folders) and ``common/`` if missing."""
    ensure_area(settings=settings, area=username)
    ensure_area(settings=settings, area=COMMON)


EXAMPLES_DIR = Path(__file__).parent / "examples"


def seed_examples(*, settings: Settings) -> list[str]:
    """Copy the example assets into ``common/`` where missing; returns what was added.

    An asset folder that exists is never touched, so edits made by the site survive.
    """
    common = ensure_area(settings=settings, area=COMMON)
    added = []
    for kind_dir in sorted((EXAMPLES_DIR / COMMON).iterdir()):
        for asset in sorted(kind_dir.iterdir()):
            target = common / kind_dir.name / asset.name
            if not target.exists():
                shutil.copytree(asset, target)
                added.append(f"{COMMON}/{kind_dir.name}/{asset.name}")
    if added:
        log.info("example assets seeded assets=%s", ",".join(added))
    return added


def tree_bytes(folder: Path) -> int:
    """The bytes of the regular files under ``folder``: links are not followed, a file
    with several hard links counts once, and a missing folder holds nothing."""
    total = 0
    seen: set[tuple[int, int]] = set()
    pending = [str(folder)]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:  # removed or made unreadable while walking: nothing to count there
            continue
        with scan:
            for entry in scan:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total


def bytes_used(
    *, settings: Settings, username: str, measure: Callable[[Path], int] = tree_bytes
) -> int:
    """What a user's library takes on disk; ``measure`` walks a folder (accounting passes
    one that caches)."""
    return measure(settings.resolved_files_dir / username)


def _bytes_of(path: Path) -> int:
    """The bytes of a file or a folder, as ``tree_bytes`` counts them (a link is its own)."""
    if path.is_dir() and not path.is_symlink():
        return tree_bytes(path)
    info = path.lstat()
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _counted(budget: StorageBudget | None, location: Location) -> StorageBudget | None:
    """The budget a write into ``location`` counts to: none for ``common/``."""
    return budget if budget is not None and location.area == budget.username else None


def etag_of(info: os.stat_result) -> str:
    """A strong validator: a replaced or rewritten file gets a new one."""
    return f'"{info.st_ino:x}-{info.st_mtime_ns:x}-{info.st_size:x}"'


def _mtime(info: os.stat_result) -> datetime:
    return datetime.fromtimestamp(info.st_mtime, tz=UTC)


def read_description(folder: Path) -> str | None:
    """The first paragraph of an asset's ``description.md`` or ``README.md``."""
    for name in DESCRIPTION_FILES:
        candidate = folder / name
        if not candidate.is_file() or candidate.is_symlink():
            continue
        with candidate.open("rb") as handle:
            text = handle.read(4096).decode("utf-8", errors="replace")
        paragraph: list[str] = []
        for line in text.splitlines():
            stripped = line.strip()
            if not stripped:
                if paragraph:
                    break
                continue
            if stripped.startswith(("#", "![", "<")) and not paragraph:
                continue  # headings, badges and HTML are not a description
            paragraph.append(stripped)
        if paragraph:
            return " ".join(paragraph)[:300]
    return None


def _is_asset_folder(location_inner: str) -> bool:
    parts = location_inner.split("/")
    return len(parts) == 2 and parts[0] in KINDS


def _entry(*, location: Location, name: str, info: os.stat_result, real: Path) -> Entry:
    inner = f"{location.inner}/{name}" if location.inner else name
    is_folder = stat.S_ISDIR(info.st_mode)
    return Entry(
        name=name,
        path=f"{location.area}/{inner}",
        type=EntryType.FOLDER if is_folder else EntryType.FILE,
        size=0 if is_folder else info.st_size,
        mtime=_mtime(info),
        kind=inner.split("/", 1)[0] if inner.split("/", 1)[0] in KINDS else None,
        description=read_description(real) if is_folder and _is_asset_folder(inner) else None,
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _children(location: Location) -> Iterator[tuple[str, os.stat_result, Path]]:
    with os.scandir(location.real) as scan:
        for item in scan:
            if item.name.startswith(HIDDEN_PREFIX):
                continue
            real = Path(item.path)
            if item.is_symlink():
                # Show a symlink only if it stays in its area; never stat what lies outside.
                target = real.resolve()
                if not _inside(target, location.area_root) or not target.exists():
                    continue
                real = target
            try:
                info = real.stat()
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                yield item.name, info, real


def _area_entries(*, settings: Settings, actor: Principal) -> list[Entry]:
    entries = []
    for area in readable_areas(actor):
        location = locate(settings=settings, actor=actor, path=area, write=False)
        info = location.real.stat()
        entries.append(
            Entry(
                name=area,
                path=area,
                type=EntryType.FOLDER,
                size=0,
                mtime=_mtime(info),
                kind=None,
            )
        )
    return entries


def list_folder(
    *,
    settings: Settings,
    actor: Principal,
    path: str,
    sort: SortKey = SortKey.NAME,
    descending: bool = False,
    offset: int = 0,
    limit: int = 200,
) -> Listing:
    """One page of a folder's entries, folders first when sorted by name or type.

    The empty path lists the areas the caller can read: their own and ``common``.

    Raises: BadRequest; PermissionDenied; NotFound; Conflict if the path is a file.
    """
    if not path.strip("/"):
        entries = _area_entries(settings=settings, actor=actor)
        return Listing(path="", entries=entries, total=len(entries), offset=0, limit=limit)
    location = locate(settings=settings, actor=actor, path=path, write=False)
    if not location.real.is_dir():
        raise Conflict(f"{location.path} is a file, not a folder.", loc=["path"])
    children = list(_children(location))

    def size(info: os.stat_result) -> int:
        return 0 if stat.S_ISDIR(info.st_mode) else info.st_size

    keys: dict[SortKey, Callable[[tuple[str, os.stat_result, Path]], Any]] = {
        SortKey.NAME: lambda c: c[0].casefold(),
        SortKey.TYPE: lambda c: (Path(c[0]).suffix, c[0]),
        SortKey.SIZE: lambda c: (size(c[1]), c[0].casefold()),
        SortKey.MTIME: lambda c: (c[1].st_mtime_ns, c[0].casefold()),
    }
    children.sort(key=keys[sort], reverse=descending)
    if sort in (SortKey.NAME, SortKey.TYPE):
        # Folders first in either direction (a stable second sort keeps the order within).
        children.sort(key=lambda c: not stat.S_ISDIR(c[1].st_mode))
    limit = max(1, min(limit, MAX_LIMIT))
    # Sort on metadata, then build entries (and read descriptions) for this page only.
    page = [
        _entry(location=location, name=name, info=info, real=real)
        for name, info, real in children[offset : offset + limit]
    ]
    return Listing(
        path=location.path, entries=page, total=len(children), offset=offset, limit=limit
    )


def _writable(actor: Principal, area: str) -> bool:
    try:
        check_area(actor=actor, area=area, write=True)
    except PermissionDenied:
        return False
    return True


def stat_entry(*, settings: Settings, actor: Principal, path: str) -> EntryDetail:
    """Metadata of one file or folder, with its ETag.

    Raises: BadRequest; PermissionDenied; NotFound.
    """
    location = locate(settings=settings, actor=actor, path=path, write=False)
    return _detail(actor=actor, location=location)


def _detail(*, actor: Principal, location: Location) -> EntryDetail:
    info = location.real.stat()
    is_folder = stat.S_ISDIR(info.st_mode)
    name = location.inner.rsplit("/", 1)[-1] if location.inner else location.area
    return EntryDetail(
        name=name,
        path=location.path,
        type=EntryType.FOLDER if is_folder else EntryType.FILE,
        size=0 if is_folder else info.st_size,
        mtime=_mtime(info),
        kind=location.kind,
        description=read_description(location.real)
        if is_folder and _is_asset_folder(location.inner)
        else None,
        etag=etag_of(info),
        media_type=None if is_folder else mimetypes.guess_type(name)[0],
        writable=_writable(actor, location.area),
    )


def open_file(*, settings: Settings, actor: Principal, path: str) -> tuple[Location, EntryDetail]:
    """A file to stream to the caller, and its metadata.

    Raises: BadRequest; PermissionDenied; NotFound; Conflict if it is a folder.
    """
    location = locate(settings=settings, actor=actor, path=path, write=False)
    if location.real.is_dir():
        raise Conflict(
            f"{location.path} is a folder; list it, or download it as a zip.", loc=["path"]
        )
    return location, _detail(actor=actor, location=location)


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f"{HIDDEN_PREFIX}{uuid.uuid4().hex}")


def _write_new_file(target: Path, content: bytes) -> None:
    """Create ``target`` atomically; fails if something appeared there meanwhile."""
    tmp = _temporary_sibling(target)
    try:
        with tmp.open("xb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, target)  # unlike rename, link never replaces an existing file
    except FileExistsError:
        raise Conflict(f"{target.name} was created meanwhile; reload and try again.") from None
    finally:
        tmp.unlink(missing_ok=True)


def _replace_file(target: Path, content: bytes) -> None:
    tmp = _temporary_sibling(target)
    try:
        with tmp.open("xb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        shutil.copymode(target, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(
    *,
    settings: Settings,
    actor: Principal,
    path: str,
    content: bytes,
    if_match: str | None,
    max_bytes: int,
    budget: StorageBudget | None = None,
) -> EntryDetail:
    """Create or replace a text file, refusing a write based on a stale version.

    An existing file is replaced only with ``if_match`` equal to its current ETag; the
    check and the replacement happen under an exclusive lock, so of two concurrent edits
    of one version exactly one wins and the other gets 412.

    Raises: BadRequest; PermissionDenied; NotFound; PayloadTooLarge; InvalidInput if the
    content is not UTF-8; PreconditionRequired; PreconditionFailed; Conflict;
    QuotaExceeded when the file would not fit into the owner's ``budget``.
    """
    if len(content) > max_bytes:
        raise PayloadTooLarge(
            f"Text files are edited up to {max_bytes} bytes; upload larger files instead.",
            loc=["body"],
        )
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"The content is not UTF-8 text (byte {exc.start} is invalid); upload binary "
            "files instead of editing them.",
            loc=["body"],
        ) from None
    location = locate(settings=settings, actor=actor, path=path, write=True, must_exist=False)
    if location.is_layout:
        raise Conflict(f"{location.path} is a folder of the library layout.", loc=["path"])
    target = location.real
    counted = _counted(budget, location)
    if not target.exists():
        if if_match not in (None, "*"):
            raise PreconditionFailed(
                f"{location.path} no longer exists; it was moved or deleted.", loc=["path"]
            )
        if counted is not None:
            counted.require(len(content), doing="Saving this file", loc=["body"])
        _write_new_file(target, content)
        if counted is not None:
            counted.changed(len(content))
        log.info("file created path=%s actor=%s", location.path, actor.username)
        return _detail(actor=actor, location=location)
    if target.is_dir():
        raise Conflict(f"{location.path} is a folder, not a text file.", loc=["path"])
    if if_match == "*":
        raise PreconditionFailed(
            f"{location.path} already exists; read it and send its ETag to replace it.",
            loc=["header", "If-Match"],
        )
    if if_match is None:
        raise PreconditionRequired(
            f"{location.path} exists: send If-Match with the ETag you read, so a newer "
            "version is not overwritten.",
            loc=["header", "If-Match"],
        )
    growth = len(content) - target.stat().st_size
    if counted is not None:
        counted.require(growth, doing="Saving this file", loc=["body"])
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Stat the path, not the descriptor: a winner before us replaced the inode.
        if etag_of(target.stat()) != if_match:
            raise PreconditionFailed(
                f"{location.path} was changed since you read it; reload it, reapply your "
                "edit and save again.",
                loc=["header", "If-Match"],
            )
        _replace_file(target, content)
    finally:
        os.close(fd)  # closing releases the lock
    if counted is not None:
        counted.changed(growth)
    log.info("file edited path=%s actor=%s", location.path, actor.username)
    return _detail(actor=actor, location=location)


def make_folder(*, settings: Settings, actor: Principal, path: str) -> EntryDetail:
    """Create a folder; its parent must exist.

    Raises: BadRequest; PermissionDenied; Conflict if something exists there.
    """
    location = locate(settings=settings, actor=actor, path=path, write=True, must_exist=False)
    if location.real.exists():
        raise Conflict(f"{location.path} already exists.", loc=["path"])
    location.real.mkdir()
    log.info("folder created path=%s actor=%s", location.path, actor.username)
    return _detail(actor=actor, location=location)


def _source_and_destination(
    *, settings: Settings, actor: Principal, source: str, destination: str, move: bool
) -> tuple[Location, Location]:
    src = locate(settings=settings, actor=actor, path=source, write=move, follow=not move)
    dst = locate(settings=settings, actor=actor, path=destination, write=True, must_exist=False)
    if src.is_layout:
        raise Conflict(f"{src.path} is a folder of the library layout.", loc=["source"])
    if dst.is_layout:
        raise Conflict(f"{dst.path} is a folder of the library layout.", loc=["destination"])
    if src.real == dst.real or src.real in dst.real.parents:
        raise Conflict(
            f"Cannot {'move' if move else 'copy'} {src.path} into itself.", loc=["destination"]
        )
    return src, dst


def move(
    *,
    settings: Settings,
    actor: Principal,
    source: str,
    destination: str,
    overwrite: bool,
    budget: StorageBudget | None = None,
) -> EntryDetail:
    """Rename or move a file or folder, within or between the caller's writable areas.

    Raises: BadRequest; PermissionDenied; NotFound; Conflict; QuotaExceeded when moving
    from ``common/`` into the caller's library would not fit into their ``budget``.
    """
    src, dst = _source_and_destination(
        settings=settings, actor=actor, source=source, destination=destination, move=True
    )
    if dst.real.exists() and (not overwrite or dst.real.is_dir() or src.real.is_dir()):
        raise Conflict(f"{dst.path} already exists.", loc=["destination"])
    counted = _counted(budget, dst) if src.area != dst.area else None
    if counted is not None:
        counted.require(_bytes_of(src.real), doing="Moving this into your library")
    try:
        src.real.rename(dst.real)
    except OSError:
        # Another file system: copy next to the destination, then swap in atomically.
        tmp = _temporary_sibling(dst.real)
        _copy(src.real, tmp)
        tmp.replace(dst.real)
        _remove(src.real)
    if budget is not None and src.area != dst.area:
        budget.changed(None)  # one of the areas was the caller's: measure it again
    log.info("moved source=%s destination=%s actor=%s", src.path, dst.path, actor.username)
    return _detail(actor=actor, location=dst)


def _special_files(folder: str, names: list[str]) -> list[str]:
    """Names that are neither files, folders nor links (FIFOs, sockets, devices)."""
    skipped = []
    for name in names:
        mode = (Path(folder) / name).lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            skipped.append(name)
    return skipped


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        # symlinks=True copies links as links: following them could copy what lies
        # outside the source area; a copied link is judged again whenever it is used.
        shutil.copytree(source, target, symlinks=True, ignore=_special_files)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def copy(
    *,
    settings: Settings,
    actor: Principal,
    source: str,
    destination: str,
    overwrite: bool,
    budget: StorageBudget | None = None,
) -> EntryDetail:
    """Copy a file or folder, e.g. from ``common/`` into your own library.

    The copy is built under a hidden name and renamed into place, so a failure leaves
    nothing half-copied.

    Raises: BadRequest; PermissionDenied; NotFound; Conflict; QuotaExceeded when the copy
    would not fit into the owner's ``budget``.
    """
    src, dst = _source_and_destination(
        settings=settings, actor=actor, source=source, destination=destination, move=False
    )
    if dst.real.exists() and (not overwrite or dst.real.is_dir() or src.real.is_dir()):
        raise Conflict(f"{dst.path} already exists.", loc=["destination"])
    counted = _counted(budget, dst)
    growth = 0
    if counted is not None:
        growth = _bytes_of(src.real) - (_bytes_of(dst.real) if dst.real.exists() else 0)
        counted.require(growth, doing="Copying this into your library")
    tmp = _temporary_sibling(dst.real)
    try:
        _copy(src.real, tmp)
        tmp.replace(dst.real)
    finally:
        if tmp.exists():
            _remove(tmp)
    if counted is not None:
        counted.changed(growth)
    log.info("copied source=%s destination=%s actor=%s", src.path, dst.path, actor.username)
    return _detail(actor=actor, location=dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def delete(
    *,
    settings: Settings,
    actor: Principal,
    path: str,
    recursive: bool,
    budget: StorageBudget | None = None,
) -> None:
    """Delete a file, or a folder with ``recursive``; ``budget`` learns that space was freed.

    A folder is first renamed to a hidden name, so it disappears at once and whole.

    Raises: BadRequest; PermissionDenied; NotFound; Conflict.
    """
    location = locate(settings=settings, actor=actor, path=path, write=True, follow=False)
    if location.is_layout:
        raise Conflict(
            f"{location.path} is a folder of the library layout and cannot be deleted.",
            loc=["path"],
        )
    own = location.real
    counted = _counted(budget, location)
    freed = 0
    if own.is_dir() and not own.is_symlink():
        with os.scandir(own) as children:
            has_content = any(children)
        if not recursive and has_content:
            raise Conflict(
                f"{location.path} is a folder that is not empty; delete it recursively.",
                loc=["path"],
            )
        doomed = _temporary_sibling(own)
        own.rename(doomed)
        if counted is not None:
            freed = tree_bytes(doomed)
        shutil.rmtree(doomed)
    else:
        with contextlib.suppress(FileNotFoundError):
            freed = _bytes_of(own)
            own.unlink()
    if counted is not None:
        counted.changed(-freed)
    log.info("deleted path=%s actor=%s", location.path, actor.username)


def find_folder(*, settings: Settings, actor: Principal, path: str, write: bool) -> Location:
    """A folder of the caller's libraries, for other domains that work on folders (DTs).

    Raises: BadRequest; PermissionDenied; NotFound (also when it is a file).
    """
    location = locate(settings=settings, actor=actor, path=path, write=write)
    require_folder(location)
    return location


def is_readable(*, settings: Settings, actor: Principal, path: str) -> bool:
    """Whether ``path`` exists and the caller may read it."""
    try:
        locate(settings=settings, actor=actor, path=path, write=False)
    except DtaasError:
        return False
    return True


def require_folder(location: Location) -> None:
    """Raises: NotFound if ``location`` is not a folder."""
    if not location.real.is_dir():
        raise NotFound(f"{location.path} is not a folder.", loc=["path"])
