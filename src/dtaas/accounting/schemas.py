"""Pydantic models of accounting's API: storage used and quotas."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from dtaas.errors import InvalidInput

# 1 PiB: far above any disk, far below what a 64-bit byte count can hold.
MAX_QUOTA_MB = 1024**3
RESET_WORDS = ("", "none", "default")


def parse_quota_mb(text: str) -> int | None:
    """A quota as a person types it: whole MiB, or ``none`` (or nothing) for the default.

    Raises: InvalidInput.
    """
    value = text.strip().lower()
    if value in RESET_WORDS:
        return None
    if not re.fullmatch(r"[0-9]{1,16}", value) or int(value) > MAX_QUOTA_MB:
        raise InvalidInput(
            f"{text.strip()!r} is not a quota: give whole MiB from 0 to {MAX_QUOTA_MB}, or "
            "'none' for the site default.",
            loc=["quota_mb"],
        )
    return int(value)


class StorageRead(BaseModel):
    """What a user stores, by part, and their quota (sizes in bytes)."""

    model_config = ConfigDict(from_attributes=True)

    username: str
    library_bytes: int = Field(description="Their library, <files>/<username>/.")
    instances_bytes: int = Field(description="Their instances' working copies and logs.")
    snapshots_bytes: int = Field(description="Their ready snapshots' files.")
    used_bytes: int
    quota_mb: int | None = Field(description="The quota in MiB; null means unlimited.")
    quota_bytes: int | None
    free_bytes: int | None = Field(description="Left before the quota; null means unlimited.")
    quota_source: Literal["user", "site"] = Field(
        description="'user': set for this user by an administrator; 'site': the default."
    )
    over_quota: bool


class QuotaUpdate(BaseModel):
    """A user's own storage quota; null returns them to the site default."""

    model_config = ConfigDict(extra="forbid")

    quota_mb: Annotated[int, Field(strict=True, ge=0, le=MAX_QUOTA_MB)] | None = Field(
        description="Whole MiB (1 MiB = 1,048,576 bytes), 0 or more; null for the site default."
    )
