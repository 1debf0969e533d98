"""Tables of accounting: the storage quotas administrators set for single users."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from dtaas.db import Base, UtcDateTime, utcnow


class StorageQuota(Base):
    """One user's storage quota, replacing the site's default (``storage_quota_mb``).

    No row means the site default applies; an administrator resets a user by deleting it.
    """

    __tablename__ = "storage_quota"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True
    )
    quota_mb: Mapped[int] = mapped_column(BigInteger)
    # The administrator who set it; usernames never change.
    set_by: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
