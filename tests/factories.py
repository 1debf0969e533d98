"""Small factories that build test data through the real services."""

from __future__ import annotations

from typing import Literal

from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.security import service as security
from dtaas.security.models import Role, User
from dtaas.security.permissions import Principal

PASSWORD = "correct horse battery"


def make_principal(user: User, *, auth: Literal["session", "token"] = "token") -> Principal:
    """A principal acting as ``user`` (as if they had sent a valid token)."""
    return Principal(
        user_id=user.id, username=user.username, role=user.role, auth=auth, credential_id=0
    )


def _first_admin(session: Session, settings: Settings) -> Principal:
    found = security.find_user(session=session, username="factory-root")
    if found is None:
        found = security.bootstrap_admin(
            session=session, settings=settings, username="factory-root", password=PASSWORD
        )
    return make_principal(found)


def make_user(
    session: Session,
    settings: Settings,
    *,
    username: str,
    role: Role = Role.USER,
    password: str = PASSWORD,
) -> User:
    """Create a user through the security service."""
    return security.create_user(
        session=session,
        settings=settings,
        actor=_first_admin(session, settings),
        username=username,
        password=password,
        role=role,
    )


def bearer(session: Session, settings: Settings, user: User) -> dict[str, str]:
    """Authorization headers with a fresh API token of ``user``."""
    created = security.create_token(
        session=session, settings=settings, actor=make_principal(user), name="test"
    )
    return {"Authorization": f"Bearer {created.token}"}
