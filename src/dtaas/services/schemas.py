"""Request and response models of the services domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from dtaas.services.models import HealthStatus, ServiceKind

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,62}$"
# Loose limits here: the service checks names and URLs with messages that say what to do.
ServiceName = Annotated[str, StringConstraints(max_length=200)]
ServiceUrl = Annotated[str, StringConstraints(max_length=4096)]
Username = Annotated[str, StringConstraints(max_length=256)]
Password = Annotated[str, StringConstraints(max_length=1024)]
Description = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
Source = Literal["settings", "embedded", "registered"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HealthRead(BaseModel):
    """The last check of a service."""

    status: HealthStatus
    latency_ms: float | None = None
    checked_at: datetime | None = None
    error: str | None = None


class ServiceRead(BaseModel):
    """A service in the catalogue; its URL never carries a password."""

    name: str
    kind: ServiceKind
    url: str
    source: Source
    username: str | None = None
    has_password: bool = False
    description: str = ""
    env_var: str | None = Field(
        default=None, description="The variable a DT's job finds this service's URL in."
    )
    health: HealthRead


class ServiceCreate(Strict):
    """An external service to register (admins)."""

    name: ServiceName
    kind: ServiceKind
    url: ServiceUrl
    username: Username | None = None
    password: Password | None = None
    description: Description = ""


class ServiceUpdate(Strict):
    """Changes to a registered service; a field left out stays as it is.

    ``password: null`` removes the stored password, as does ``username: null`` the user.
    """

    kind: ServiceKind | None = None
    url: ServiceUrl | None = None
    username: Username | None = None
    password: Password | None = None
    description: Description | None = None

    @model_validator(mode="after")
    def _required_fields_not_null(self) -> ServiceUpdate:
        for field in ("kind", "url", "description"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null; leave it out to keep its value")
        return self
