"""Request and response models of the security domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from dtaas.security.models import Role

USERNAME_PATTERN = r"^[a-z][a-z0-9_-]{1,31}$"

Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, pattern=USERNAME_PATTERN),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
NewPassword = Annotated[str, StringConstraints(min_length=10, max_length=1024)]


class Strict(BaseModel):
    """Input models refuse unknown fields, so typos are reported, not ignored."""

    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Password


class PasswordTokenRequest(LoginRequest):
    """Trade a password for a new API token (what `dtaas login` does)."""

    token_name: Annotated[str, StringConstraints(min_length=1, max_length=100)] = "cli"
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class UserCreate(Strict):
    username: Username
    password: NewPassword
    role: Role = Role.USER
    full_name: Annotated[str, StringConstraints(max_length=200)] = ""


class UserUpdate(Strict):
    role: Role | None = None
    full_name: Annotated[str, StringConstraints(max_length=200)] | None = None
    is_active: bool | None = None


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    full_name: str
    role: Role
    is_active: bool
    created_at: datetime


class PasswordChange(Strict):
    current_password: Password
    new_password: NewPassword


class TokenCreate(Strict):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenRead):
    """A new token; ``token`` is shown this once and never again."""

    token: str


class SessionRead(BaseModel):
    """The signed-in user and the CSRF token for unsafe cookie requests."""

    user: UserRead
    csrf_token: str


class Me(BaseModel):
    user: UserRead
    organisation: str
    permissions: list[str]
    auth: str
