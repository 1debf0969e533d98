"""Tables of the twins domain: saved configurations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtaas.db import Base, UtcDateTime, utcnow


class TwinConfiguration(Base):
    """A DT plus parameter values, saved under a name by one user."""

    __tablename__ = "twin_configuration"
    __table_args__ = (UniqueConstraint("owner_id", "twin_path", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    twin_path: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(100))
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)
