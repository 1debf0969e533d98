"""A user's storage budget: what library and lifecycle consult before they store bytes.

Accounting makes budgets (``accounting.service.budget_for``); the domains that write only
see this interface, so they need not know how usage is measured or cached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from dtaas.errors import Loc, QuotaExceeded

MIB = 1024 * 1024
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
ADVICE = (
    "Delete files, instances or snapshots you no longer need (`dtaas storage` shows what "
    "takes the space), or ask an administrator for a larger quota."
)


def format_bytes(size: int) -> str:
    """A byte count for people: ``512 bytes``, ``1.5 KiB``, ``20.0 MiB``."""
    if abs(size) < 1024:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    value = size / 1024
    index = 0
    while abs(value) >= 1024 and index < len(_UNITS) - 1:
        value /= 1024
        index += 1
    return f"{value:.1f} {_UNITS[index]}"


class StorageBudget(ABC):
    """How much more one user may store, measured when first asked.

    ``username`` names the library area the budget covers: writes into other areas
    (``common/``) count to nobody.
    """

    def __init__(self, *, username: str) -> None:
        self.username = username

    @abstractmethod
    def quota_bytes(self) -> int | None:
        """The user's quota in bytes; None when storage is unlimited."""

    @abstractmethod
    def used_bytes(self) -> int:
        """What the user stores now: library, instances and snapshots."""

    @abstractmethod
    def changed(self, delta: int | None) -> None:
        """Tell accounting what a write into the user's library did: ``delta`` bytes more
        (less if negative), or None when unknown, so the next question measures again."""

    def free_bytes(self) -> int | None:
        """Bytes left before the quota (0 when over it); None when storage is unlimited."""
        quota = self.quota_bytes()
        return None if quota is None else max(0, quota - self.used_bytes())

    def require(self, adding: int, *, doing: str, loc: Loc | None = None) -> None:
        """Raises QuotaExceeded if storing ``adding`` more bytes would pass the quota."""
        free = self.free_bytes()
        if free is not None and adding > 0 and adding > free:
            raise self.refusal(doing=doing, needed=adding, loc=loc)

    def refusal(self, *, doing: str, needed: int | None, loc: Loc | None = None) -> QuotaExceeded:
        """The error that says what was refused, how the quota stands and what to do."""
        return QuotaExceeded(f"{doing} {self.describe(needed=needed)} {ADVICE}", loc=loc)

    def describe(self, *, needed: int | None = None) -> str:
        """``would pass your storage quota: <used> of <quota> used, <free> free...``."""
        quota = self.quota_bytes() or 0
        used = self.used_bytes()
        text = (
            f"would pass your storage quota: {format_bytes(used)} of {format_bytes(quota)} "
            f"used, {format_bytes(max(0, quota - used))} free"
        )
        return text + (f", {format_bytes(needed)} needed." if needed is not None else ".")
