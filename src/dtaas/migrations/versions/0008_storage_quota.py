"""storage quotas: an administrator's override of the site default per user

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dtaas.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "storage_quota",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("quota_mb", sa.BigInteger(), nullable=False),
        sa.Column("set_by", sa.String(length=32), nullable=False),
        sa.Column("updated_at", dtaas.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_storage_quota_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_storage_quota")),
    )


def downgrade() -> None:
    op.drop_table("storage_quota")
