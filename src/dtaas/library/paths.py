"""The one place where a user-supplied path becomes a real path inside an allowed root.

Every path a user sends goes through :func:`resolve` once; nothing else joins user
strings onto server paths. A path is ``/``-separated and relative to the root; ``""`` and
``"."`` name the root itself, and empty or ``.`` components (``a//b``, ``./a``, ``a/``)
collapse. Checks, in order:

1. The string (``BadRequest``, 400). Refused: ``..`` anywhere, even where it would stay
   inside; absolute paths (leading ``/`` or ``\\``, a drive letter such as ``C:`` as the
   first component); backslashes; control, format, bidi, zero-width, line-separator and
   lone-surrogate characters (Unicode categories Cc, Cf, Cs, Zl, Zp); percent escapes
   (``%`` and two hex digits: the HTTP layer decoded once, so a remaining escape is a
   double-encoding trick; a lone ``%`` as in ``100% done.csv`` is fine); a name over 255
   or a path over 4096 bytes in UTF-8.
2. Unicode look-alikes (``BadRequest``). A name must be NFC, so one name cannot exist as
   two byte strings that look the same; this also refuses NFD names written by other
   tools, which then cannot be reached through the platform. A non-ASCII character is
   refused if its NFKC form contains ``/ \\ . : %`` (U+FF0E fullwidth full stop, U+2024
   one dot leader, U+2026 ellipsis, U+FF0F fullwidth solidus ...), because anything
   downstream that applies NFKC would turn it into path syntax. NFKC leaves a few slash
   look-alikes alone (U+2215 division slash, U+2044 fraction slash ...), so those are
   listed explicitly. Other NFKC differences (fullwidth letters, ligatures) do not create
   path syntax and are allowed.
3. The file system, one component at a time with ``lstat`` (``PermissionDenied``, 403):
   a symlink, intermediate or final, is followed only while it stays inside the root
   (its target is walked the same way, so chains are judged link by link); an existing
   target must be a regular file or a folder, never a FIFO, socket or device.
4. Existence (``NotFound``, 404), reported with the user's relative path.

Messages name the offending component and never a server path or a symlink's target.

:func:`resolve` says where a path points *now*; a symlink swapped in afterwards would
still be followed by a plain ``open``. To read or write, use :func:`open_beneath` or
:func:`open_parent_beneath`: they resolve, then open the real path again one component
at a time with ``O_NOFOLLOW``, so a swap between the two steps is refused, not followed.
Linux only.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import unicodedata
from collections import deque
from pathlib import Path, PurePosixPath

from dtaas.errors import BadRequest, Conflict, DtaasError, NotFound, PermissionDenied

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
MAX_PATH_BYTES = 4096  # PATH_MAX
MAX_SYMLINK_HOPS = 40  # the kernel's own limit (MAXSYMLINKS), so loops end the same way

# Names the platform uses for work in progress: never listed, never addressable.
HIDDEN_PREFIX = ".dtaas-"
_LOC: list[str | int] = ["path"]
# Characters with path meaning somewhere: POSIX, Windows, URLs.
_PATH_SYNTAX = frozenset("/\\.:%")
# Separator look-alikes that NFKC leaves unchanged, so the NFKC rule cannot see them.
_LOOKALIKES = frozenset(
    "\u2044"  # fraction slash
    "\u2215"  # division slash
    "\u2216"  # set minus
    "\u2571"  # box drawings light diagonal upper right to lower left
    "\u2572"  # box drawings light diagonal upper left to lower right
    "\u27cb"  # mathematical rising diagonal
    "\u27cd"  # mathematical falling diagonal
    "\u29f5"  # reverse solidus operator
    "\u29f8"  # big solidus
    "\u29f9"  # big reverse solidus
    "\u2236"  # ratio (a colon)
    "\ua789"  # modifier letter colon
)
# Cs: lone surrogates (from surrogateescape) cannot even be encoded to UTF-8.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"[A-Za-z]:")
_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after resolve must not hang the open (cleared again
# afterwards unless asked for); O_NOCTTY: a terminal must never become ours.
_OPEN_GUARD = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def resolve(*, root: Path, path: str, must_exist: bool = True) -> Path:
    """Resolve a user path to the absolute real path it names inside ``root``.

    With ``must_exist=False`` the last component may be missing (to create it), but its
    folder must exist. ``root`` itself is trusted and resolved first.

    Raises: BadRequest for a malformed or deceptive path; PermissionDenied for a symlink
    leaving ``root`` or a target that is neither a file nor a folder; NotFound for a
    missing target (or, with ``must_exist=False``, a missing folder).
    """
    root_real = _real_root(root)
    parts = _split(path)
    return _walk(root_real=root_real, parts=parts, must_exist=must_exist)


def to_relative(*, root: Path, real: Path) -> str:
    """Show a real path inside ``root`` as the user's ``/``-separated path (``""`` for root).

    Raises: ValueError if ``real`` is not an absolute path inside ``root``; callers only
    pass paths that :func:`resolve` returned, so this is a programming error.
    """
    return _relative(root.resolve(), real)


def open_parent_beneath(*, root: Path, path: str) -> tuple[int, str]:
    """Open the folder that will hold ``path``; return its descriptor and the final name.

    For writes: create a temporary name with ``dir_fd=``, then
    ``os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)``. An inside-root symlink as the
    final component is resolved first, so the write lands on its target. The caller
    closes the descriptor.

    Raises: BadRequest (also when ``path`` names the root itself); PermissionDenied;
    NotFound when the folder does not exist.
    """
    real = resolve(root=root, path=path, must_exist=False)
    root_real = _real_root(root)
    shown = _display(_split(path))
    names = real.relative_to(root_real).parts
    if not names:
        raise BadRequest(
            f"{shown!r} is the library root itself; name a file or folder inside it.",
            loc=_LOC,
        )
    return _open_folders(root_real=root_real, names=names[:-1], shown=shown), names[-1]


def open_beneath(*, root: Path, path: str, flags: int, mode: int = 0o644) -> int:
    """Open a user path inside ``root`` with ``os.open`` flags; return the descriptor.

    The path is resolved (missing is allowed when ``flags`` has ``O_CREAT``), then
    opened again along its real path with ``O_NOFOLLOW`` at every step, so a symlink,
    FIFO or device swapped in after the check is refused rather than used. The caller
    closes the descriptor (``os.fdopen`` takes it over).

    Raises: BadRequest; PermissionDenied; NotFound; Conflict when ``O_EXCL`` meets an
    existing name or a folder is opened for writing.
    """
    real = resolve(root=root, path=path, must_exist=not flags & os.O_CREAT)
    root_real = _real_root(root)
    shown = _display(_split(path))
    names = real.relative_to(root_real).parts
    parent_fd: int | None = None
    target: str | Path = root_real
    if names:
        parent_fd = _open_folders(root_real=root_real, names=names[:-1], shown=shown)
        target = names[-1]
    try:
        fd = os.open(target, flags | _OPEN_GUARD, mode, dir_fd=parent_fd)
    except OSError as exc:
        error = _open_error(exc, shown=shown, is_symlink=exc.errno == errno.ELOOP)
        if error is None:
            raise
        raise error from exc
    finally:
        if parent_fd is not None:
            os.close(parent_fd)
    try:
        _require_file_or_folder(os.fstat(fd).st_mode, shown=shown)
        if not flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _real_root(root: Path) -> Path:
    real = root.resolve(strict=True)
    if not real.is_dir():
        # A configuration error, not the user's: it surfaces as a 500.
        raise NotADirectoryError(errno.ENOTDIR, "library root is not a directory", str(root))
    return real


def _split(path: str) -> list[str]:
    """Check a user path as a string and return its components without ``""`` and ``.``.

    Raises: BadRequest.
    """
    raw_parts = path.split("/")
    for part in raw_parts:
        # First, so that every later check (and the UTF-8 length) sees printable text.
        _check_characters(part)
    size = len(path.encode())
    if size > MAX_PATH_BYTES:
        raise BadRequest(
            f"The path is {size} bytes long in UTF-8; the limit is {MAX_PATH_BYTES}.",
            loc=_LOC,
        )
    if path.startswith(("/", "\\")):
        raise BadRequest(
            f"The path starts with {path[0]!r}, so it is absolute; give it relative to "
            "the library root, e.g. 'models/tank.fmu'.",
            loc=_LOC,
        )
    if _DRIVE.match(path):
        raise BadRequest(
            f"The path starts with the Windows drive {path[:2]!r}; give it relative to "
            "the library root, e.g. 'models/tank.fmu'.",
            loc=_LOC,
        )
    parts = [part for part in raw_parts if part not in ("", ".")]
    for part in parts:
        _check_name(part)
    return parts


def _check_characters(part: str) -> None:
    for char in part:
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            raise BadRequest(
                f"The name {_shorten(part)!r} contains {_describe(char)}, a control or "
                "invisible character; remove it.",
                loc=_LOC,
            )


def _check_name(part: str) -> None:
    if part.startswith(HIDDEN_PREFIX):
        raise BadRequest(
            f"The name {_shorten(part)!r} starts with {HIDDEN_PREFIX!r}, which the platform "
            "keeps for work in progress; choose another name.",
            loc=_LOC,
        )
    if part == "..":
        raise BadRequest(
            "The path contains '..'; parent references are not allowed, even when they "
            "would stay inside. Give the path from the library root.",
            loc=_LOC,
        )
    if "\\" in part:
        raise BadRequest(
            f"The name {_shorten(part)!r} contains a backslash; separate folders with '/'.",
            loc=_LOC,
        )
    escape = _PERCENT_ESCAPE.search(part)
    if escape is not None:
        raise BadRequest(
            f"The name {_shorten(part)!r} contains the percent-encoded sequence "
            f"{escape.group()!r}; send the decoded character (paths are decoded once).",
            loc=_LOC,
        )
    if not unicodedata.is_normalized("NFC", part):
        raise BadRequest(
            f"The name {_shorten(part)!r} (code points {_shorten(part)!a}) is not in "
            "Unicode NFC form; send it NFC-normalised.",
            loc=_LOC,
        )
    for char in part:
        # NFKC decomposes character by character and composition only yields letters,
        # so checking each character finds every introduced separator, dot, colon or '%'.
        if char in _LOOKALIKES or (
            not char.isascii() and _PATH_SYNTAX.intersection(unicodedata.normalize("NFKC", char))
        ):
            raise BadRequest(
                f"The name {_shorten(part)!r} contains {_describe(char)}, which looks like "
                "or normalises to a path separator, dot, colon or '%'; use plain ASCII "
                "punctuation.",
                loc=_LOC,
            )
    size = len(part.encode())
    if size > MAX_NAME_BYTES:
        raise BadRequest(
            f"The name {_shorten(part)!r} is {size} bytes long in UTF-8; the limit is "
            f"{MAX_NAME_BYTES}.",
            loc=_LOC,
        )


def _walk(*, root_real: Path, parts: list[str], must_exist: bool) -> Path:
    """Follow checked components from the root like realpath(3), never leaving the root.

    Raises: BadRequest for a symlink loop; PermissionDenied; NotFound.
    """
    shown = _display(parts)
    current = root_real
    current_mode = stat.S_IFDIR
    # Each pending name remembers the symlink it came from (None: typed by the user), so
    # a '..' that climbs out is blamed on the right link.
    pending: deque[tuple[str, Path | None]] = deque((part, None) for part in parts)
    hops = 0
    while pending:
        name, origin = pending.popleft()
        if name == "..":  # only symlink targets get here; the user's own '..' was refused
            if current == root_real:
                raise _escape(root_real=root_real, link=origin)
            current, current_mode = current.parent, stat.S_IFDIR
            continue
        candidate = current / name
        try:
            info = candidate.lstat()
        except (FileNotFoundError, NotADirectoryError):
            if pending or must_exist:
                raise _missing(parts=parts, must_exist=must_exist) from None
            return candidate
        except PermissionError:
            raise PermissionDenied(f"{shown!r} cannot be read by the server.", loc=_LOC) from None
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise BadRequest(
                    f"{shown!r} goes through more than {MAX_SYMLINK_HOPS} symlinks (a loop?).",
                    loc=_LOC,
                )
            target = PurePosixPath(candidate.readlink())
            rest = target.parts
            if target.is_absolute():
                # Compared by components, so '/srv/alice-evil' is not inside '/srv/alice'.
                if rest[: len(root_real.parts)] != root_real.parts:
                    raise _escape(root_real=root_real, link=candidate)
                current, current_mode = root_real, stat.S_IFDIR
                rest = rest[len(root_real.parts) :]
            pending.extendleft((part, candidate) for part in reversed(rest))
            continue
        if pending and not stat.S_ISDIR(info.st_mode):
            raise NotFound(
                f"{shown!r} does not exist: {_relative(root_real, candidate)!r} is not a folder.",
                loc=_LOC,
            )
        current, current_mode = candidate, info.st_mode
    _require_file_or_folder(current_mode, shown=shown)
    return current


def _open_folders(*, root_real: Path, names: tuple[str, ...], shown: str) -> int:
    """Open ``root_real/names...`` one folder at a time without following any symlink.

    Raises: PermissionDenied if a component became a symlink; NotFound if one vanished.
    """
    fd = os.open(root_real, _DIR_FLAGS)
    try:
        for name in names:
            try:
                next_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                error = _open_error(exc, shown=shown, is_symlink=_is_symlink_at(fd, name))
                if error is None:
                    raise
                raise error from exc
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_symlink_at(dir_fd: int, name: str) -> bool:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISLNK(info.st_mode)


def _open_error(exc: OSError, *, shown: str, is_symlink: bool) -> DtaasError | None:
    """The user-facing error for a failed open, or None to let ``exc`` propagate."""
    if is_symlink:
        log.warning("path swapped for a symlink after resolve path=%r", shown)
        return PermissionDenied(
            f"{shown!r} was replaced by a symlink while being opened; it was not followed. "
            "Try again.",
            loc=_LOC,
        )
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return NotFound(f"{shown!r} does not exist (it changed while being opened).", loc=_LOC)
    if exc.errno == errno.EEXIST:
        return Conflict(f"{shown!r} already exists.", loc=_LOC)
    if exc.errno == errno.EISDIR:
        return Conflict(f"{shown!r} is a folder; name a file.", loc=_LOC)
    if exc.errno == errno.ENXIO:  # a FIFO without reader or an absent device
        return PermissionDenied(
            f"{shown!r} is not a regular file or folder; only files and folders can be used.",
            loc=_LOC,
        )
    return None


def _require_file_or_folder(mode: int, *, shown: str) -> None:
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a special file")
    log.info("path refused reason=special_file kind=%s path=%r", kind, shown)
    raise PermissionDenied(
        f"{shown!r} is {kind}, not a regular file or folder; only files and folders can be used.",
        loc=_LOC,
    )


def _escape(*, root_real: Path, link: Path | None) -> PermissionDenied:
    # link is None only if a user '..' reached the walk, which _split prevents.
    shown = _relative(root_real, link) if link is not None else "."
    log.info("path refused reason=symlink_escape link=%r", shown)
    return PermissionDenied(
        f"The symlink {shown!r} points outside the library; it cannot be followed.",
        loc=_LOC,
    )


def _missing(*, parts: list[str], must_exist: bool) -> NotFound:
    if must_exist:
        return NotFound(f"{_display(parts)!r} does not exist.", loc=_LOC)
    return NotFound(
        f"Cannot create {_display(parts)!r}: the folder {_display(parts[:-1])!r} does not "
        "exist; create it first.",
        loc=_LOC,
    )


def _relative(root_real: Path, real: Path) -> str:
    if not real.is_absolute() or ".." in real.parts:
        raise ValueError(f"{real} is not an absolute, normalised path")
    return "/".join(real.relative_to(root_real).parts)


def _display(parts: list[str]) -> str:
    return "/".join(parts) or "."


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:40]}…"


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".rstrip()
