"""Alembic environment: runs on the connection handed over by ``dtaas.db.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from dtaas.db import Base
from dtaas.models import load_all

load_all()
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # `alembic` run by hand with -x url=...
    url = context.get_x_argument(as_dictionary=True)["url"]
    with create_engine(url).begin() as own:
        _run(own)
