"""instance.terminated_at, for the cleaning state

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 16:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dtaas.db

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.add_column(
            sa.Column("terminated_at", dtaas.db.UtcDateTime(timezone=True), nullable=True)
        )
    # Instances terminated before this revision: the time is unknown, the fact is not.
    op.execute("UPDATE instance SET terminated_at = updated_at WHERE state = 'terminated'")


def downgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("terminated_at")
