"""Who may reach which part of the files root, and where a user path really points.

The files root holds one *area* per user (``<files>/<username>``) and the shared
``<files>/common``; each area has the five kinds of the reference layout. A user path is
``<area>/<path inside the area>``, e.g. ``alice/models/tank.fmu`` or
``common/tools/solver``, the same paths the reference library service takes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from dtaas.config import Settings
from dtaas.errors import NotFound, PermissionDenied
from dtaas.library import paths
from dtaas.security.permissions import Permission, Principal, require

log = logging.getLogger(__name__)

COMMON = "common"
KINDS = ("functions", "models", "tools", "data", "digital_twins")


@dataclass(frozen=True, slots=True)
class Location:
    """A resolved user path: its area, the path inside the area, and the real path."""

    area: str
    inner: str
    real: Path
    area_root: Path

    @property
    def path(self) -> str:
        """The user-facing path, ``<area>/<inner>``."""
        return f"{self.area}/{self.inner}" if self.inner else self.area

    @property
    def kind(self) -> str | None:
        """The asset kind this path lies in, if any."""
        first = self.inner.split("/", 1)[0]
        return first if first in KINDS else None

    @property
    def is_layout(self) -> bool:
        """Whether this is an area root or one of its five kind folders (also via a link)."""
        return (
            self.inner in ("", *KINDS)
            or self.real == self.area_root
            or (self.real.parent == self.area_root and self.real.name in KINDS)
        )


def ensure_area(*, settings: Settings, area: str) -> Path:
    """Create an area and its five kind folders if missing; returns the area root.

    ``area`` must be ``common`` or a username that passed the username rules.
    """
    root = settings.resolved_files_dir / area
    for kind in KINDS:
        (root / kind).mkdir(parents=True, exist_ok=True)
    return root.resolve()


def readable_areas(actor: Principal) -> list[str]:
    """The areas the actor may read, own first."""
    return [actor.username, COMMON]


def check_area(*, actor: Principal, area: str, write: bool) -> None:
    """The library's permission rule.

    Everyone reads their own area and ``common``; writing one's own area needs the
    ``write`` permission (not viewers), writing ``common`` needs ``write_common`` (admins).

    Raises: PermissionDenied.
    """
    if area == COMMON:
        if write:
            require(actor, Permission.WRITE_COMMON)
        return
    if area != actor.username:
        raise PermissionDenied(
            f"{area!r} is not your library: you can reach {actor.username}/... and common/...",
            loc=["path"],
        )
    if write:
        require(actor, Permission.WRITE)


def locate(
    *,
    settings: Settings,
    actor: Principal,
    path: str,
    write: bool,
    must_exist: bool = True,
    follow: bool = True,
) -> Location:
    """Check access to a user path and resolve it safely inside its area.

    With ``follow=False`` a final symlink is the entry itself (to move or delete the
    link, never what it points to); every folder above it is still resolved safely.

    Raises: BadRequest for malformed paths; PermissionDenied outside the caller's areas
    or through a symlink that leaves them; NotFound.
    """
    stripped = path.strip("/")
    area, _, inner = stripped.partition("/")
    if not area:
        raise PermissionDenied(f"Name a library: {actor.username}/... or common/...", loc=["path"])
    check_area(actor=actor, area=area, write=write)
    area_root = ensure_area(settings=settings, area=area)
    try:
        real = paths.resolve(root=area_root, path=inner, must_exist=must_exist)
    except NotFound as exc:
        # The resolver quotes the path inside the area; show the user's whole path.
        message = re.sub(r"'([^']*)'", lambda m: f"'{area}/{m.group(1)}'", exc.message, count=1)
        raise NotFound(message, loc=exc.loc) from None
    # The resolver accepted every component, so the normalised input is what the user
    # sees, even where an inside-area symlink led elsewhere.
    clean = "/".join(part for part in inner.split("/") if part not in ("", "."))
    if not follow and clean:
        parent, _, name = clean.rpartition("/")
        # `name` is one component the resolver has just accepted.
        real = paths.resolve(root=area_root, path=parent) / name
    return Location(area=area, inner=clean, real=real, area_root=area_root)
