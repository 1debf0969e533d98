"""HTTP routes of the services domain: the catalogue, health checks and registration."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from dtaas.db import SessionDep
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.services import registry, service
from dtaas.services.deps import MonitorDep, ServiceAdmin
from dtaas.services.schemas import ServiceCreate, ServiceRead, ServiceUpdate

router = APIRouter(tags=["services"])

ServiceName = Annotated[str, Path(max_length=64, description="The service's catalogue name.")]


@router.get("/services", response_model=list[ServiceRead])
def list_services(
    session: SessionDep, settings: SettingsDep, actor: CurrentActor, monitor: MonitorDep
) -> list[ServiceRead]:
    """Every service with its health, checked concurrently (results reused for a few seconds)."""
    return service.list_services(session=session, settings=settings, actor=actor, monitor=monitor)


@router.post("/services", response_model=ServiceRead, status_code=201)
def register_service(
    body: ServiceCreate,
    session: SessionDep,
    settings: SettingsDep,
    actor: ServiceAdmin,
    monitor: MonitorDep,
) -> ServiceRead:
    """Register an external service (admins); the password is stored encrypted."""
    return registry.register_service(
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        name=body.name,
        kind=body.kind,
        url=body.url,
        username=body.username,
        password=body.password,
        description=body.description,
    )


@router.get("/services/{name}", response_model=ServiceRead)
def read_service(
    name: ServiceName,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    monitor: MonitorDep,
) -> ServiceRead:
    """One service with its health."""
    return service.get_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name
    )


def _given(body: ServiceUpdate, field: str) -> Any:
    """The field's value if the request sent it, else the marker that keeps the stored one."""
    return getattr(body, field) if field in body.model_fields_set else registry.KEEP


@router.patch("/services/{name}", response_model=ServiceRead)
def update_service(
    name: ServiceName,
    body: ServiceUpdate,
    session: SessionDep,
    settings: SettingsDep,
    actor: ServiceAdmin,
    monitor: MonitorDep,
) -> ServiceRead:
    """Change a registered service (admins); fields left out keep their value."""
    return registry.update_service(
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        name=name,
        kind=_given(body, "kind"),
        url=_given(body, "url"),
        username=_given(body, "username"),
        password=_given(body, "password"),
        description=_given(body, "description"),
    )


@router.delete("/services/{name}", status_code=204)
def delete_service(
    name: ServiceName, session: SessionDep, actor: ServiceAdmin, monitor: MonitorDep
) -> None:
    """Remove a registered service (admins)."""
    registry.delete_service(session=session, actor=actor, monitor=monitor, name=name)


@router.post("/services/{name}/check", response_model=ServiceRead)
def check_service(
    name: ServiceName,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    monitor: MonitorDep,
) -> ServiceRead:
    """Check a service now, whatever the cache holds."""
    return service.check_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name
    )
