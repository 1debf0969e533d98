"""HTTP routes of accounting: storage used, and quotas set by administrators."""

from __future__ import annotations

from fastapi import APIRouter

from dtaas.accounting import service
from dtaas.accounting.schemas import QuotaUpdate, StorageRead
from dtaas.db import SessionDep
from dtaas.security.deps import CurrentActor, SettingsDep, UserManager

router = APIRouter(prefix="/accounting", tags=["accounting"])


@router.get("/storage", response_model=StorageRead)
def read_own_storage(
    session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> StorageRead:
    """Your storage: library, instances and snapshots, against your quota."""
    usage = service.get_storage(session=session, settings=settings, actor=actor)
    return StorageRead.model_validate(usage)


@router.get("/storage/{username}", response_model=StorageRead)
def read_user_storage(
    username: str, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> StorageRead:
    """A user's storage (admins; anyone for themselves)."""
    usage = service.get_storage(session=session, settings=settings, actor=actor, username=username)
    return StorageRead.model_validate(usage)


@router.get("/quotas", response_model=list[StorageRead])
def list_storage_quotas(
    session: SessionDep, settings: SettingsDep, actor: UserManager
) -> list[StorageRead]:
    """Every user's storage and quota (admins)."""
    found = service.list_storage(session=session, settings=settings, actor=actor)
    return [StorageRead.model_validate(usage) for usage in found]


@router.put("/quotas/{username}", response_model=StorageRead)
def set_storage_quota(
    username: str,
    body: QuotaUpdate,
    session: SessionDep,
    settings: SettingsDep,
    actor: UserManager,
) -> StorageRead:
    """Set a user's storage quota in MiB, or null for the site default (admins)."""
    usage = service.set_quota(
        session=session,
        settings=settings,
        actor=actor,
        username=username,
        quota_mb=body.quota_mb,
    )
    return StorageRead.model_validate(usage)
