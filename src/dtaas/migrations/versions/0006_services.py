"""services: registered external services

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import dtaas.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_service",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "mqtt",
                "amqp",
                "postgres",
                "influxdb",
                "http",
                name="servicekind",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("username", sa.String(length=256), nullable=True),
        sa.Column("password_encrypted", sa.Text(), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", dtaas.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dtaas.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["user_account.id"],
            name=op.f("fk_registered_service_created_by_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_service")),
        sa.UniqueConstraint("name", name=op.f("uq_registered_service_name")),
    )


def downgrade() -> None:
    op.drop_table("registered_service")
