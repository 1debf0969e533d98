"""twins: configurations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:31:22.639942
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dtaas.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "twin_configuration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("twin_path", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", dtaas.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dtaas.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["user_account.id"],
            name=op.f("fk_twin_configuration_owner_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_twin_configuration")),
        sa.UniqueConstraint(
            "owner_id",
            "twin_path",
            "name",
            name=op.f("uq_twin_configuration_owner_id_twin_path_name"),
        ),
    )


def downgrade() -> None:

    op.drop_table("twin_configuration")
