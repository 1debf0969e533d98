"""FastAPI dependencies of accounting: the caller's storage budget."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from dtaas.accounting import service
from dtaas.accounting.budget import StorageBudget
from dtaas.db import SessionDep
from dtaas.security.deps import CurrentActor, SettingsDep


def storage_budget(
    session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> StorageBudget:
    """The caller's storage budget; nothing is measured unless a write asks."""
    return service.budget_for(
        session=session, settings=settings, user_id=actor.user_id, username=actor.username
    )


StorageBudgetDep = Annotated[StorageBudget, Depends(storage_budget)]
