"""snapshots of instances, and periodic snapshot settings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 17:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dtaas.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=True),
        sa.Column("twin_path", sa.String(length=1024), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "saving",
                "archiving",
                "ready",
                "failed",
                name="snapshotstate",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("save_job_id", sa.Integer(), nullable=True),
        sa.Column("auto", sa.Boolean(), nullable=False),
        sa.Column("uploaded", sa.Boolean(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", dtaas.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("completed_at", dtaas.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["user_account.id"],
            name=op.f("fk_snapshot_owner_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instance.id"],
            name=op.f("fk_snapshot_instance_id_instance"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot")),
    )
    op.create_index("ix_snapshot_state", "snapshot", ["state"])
    with op.batch_alter_table("instance") as batch:
        batch.add_column(sa.Column("auto_snapshot_minutes", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("auto_snapshot_keep", sa.Integer(), nullable=False, server_default="3")
        )


def downgrade() -> None:
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("auto_snapshot_keep")
        batch.drop_column("auto_snapshot_minutes")
    op.drop_index("ix_snapshot_state", table_name="snapshot")
    op.drop_table("snapshot")
