"""Who may do what: roles, permissions and the authenticated principal."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from dtaas.errors import PermissionDenied
from dtaas.security.models import Role


class Permission(StrEnum):
    """An action a role may be allowed to take."""

    READ = "read"
    WRITE = "write"
    OPERATE = "operate"
    WRITE_COMMON = "write_common"
    MANAGE_USERS = "manage_users"
    VIEW_METRICS = "view_metrics"
    MANAGE_SERVICES = "manage_services"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.USER: frozenset({Permission.READ, Permission.WRITE, Permission.OPERATE}),
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    username: str
    role: Role
    auth: Literal["session", "token"]
    credential_id: int
    csrf_token: str | None = None

    def has(self, permission: Permission) -> bool:
        """Whether the caller's role grants ``permission``."""
        return permission in ROLE_PERMISSIONS[self.role]


def require(actor: Principal, permission: Permission) -> None:
    """The one permission check of the platform.

    Raises: PermissionDenied if the actor's role does not grant ``permission``.
    """
    if not actor.has(permission):
        raise PermissionDenied(
            f"Your role {actor.role.value!r} does not allow {permission.value!r}; "
            "ask an administrator for a role that does."
        )
