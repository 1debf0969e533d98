"""Every domain's tables, imported in one place for Alembic and the tests."""

from __future__ import annotations


def load_all() -> None:
    """Import each domain's models so their tables join ``Base.metadata``."""
    import dtaas.accounting.models
    import dtaas.lifecycle.models
    import dtaas.security.models
    import dtaas.services.models
    import dtaas.twins.models  # noqa: F401
