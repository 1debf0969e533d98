"""The admins' storage page: every user's storage, and their quotas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from dtaas.accounting import service as accounting
from dtaas.accounting.budget import format_bytes
from dtaas.accounting.schemas import parse_quota_mb
from dtaas.db import SessionDep
from dtaas.security.deps import SettingsDep, UserManager
from dtaas.web.pages import render

router = APIRouter(include_in_schema=False)


def _table(
    request: Request, *, session: SessionDep, settings: SettingsDep, actor: UserManager, page: str
) -> HTMLResponse:
    return render(
        request,
        page,
        actor=actor,
        rows=accounting.list_storage(session=session, settings=settings, actor=actor),
        site_quota_mb=settings.storage_quota_mb,
        format_bytes=format_bytes,
    )


@router.get("/admin/storage", response_class=HTMLResponse)
def storage(
    request: Request, session: SessionDep, settings: SettingsDep, actor: UserManager
) -> HTMLResponse:
    """Every user's storage and quota."""
    return _table(request, session=session, settings=settings, actor=actor, page="storage.html")


@router.post("/admin/storage/{username}/quota", response_class=HTMLResponse)
def set_quota(
    request: Request,
    username: str,
    session: SessionDep,
    settings: SettingsDep,
    actor: UserManager,
    quota_mb: Annotated[str, Form(max_length=32)] = "",
) -> HTMLResponse:
    """Set a user's quota; empty returns them to the site default (htmx: the table)."""
    accounting.set_quota(
        session=session,
        settings=settings,
        actor=actor,
        username=username,
        quota_mb=parse_quota_mb(quota_mb),
    )
    return _table(
        request, session=session, settings=settings, actor=actor, page="_storage_table.html"
    )
