"""HTTP routes of the twins domain: DTs, validation, plans, configurations, templates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from dtaas.db import SessionDep
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.twins import service
from dtaas.twins.manifest import json_schema
from dtaas.twins.models import TwinConfiguration
from dtaas.twins.schemas import (
    ConfigurationRead,
    ConfigurationWrite,
    PlanRead,
    TemplateRead,
    TwinCreate,
    TwinDetail,
    TwinSummary,
    ValidationRead,
)

router = APIRouter(tags=["twins"])

TwinPath = Annotated[
    str,
    Query(max_length=1024, description="The DT's library path, e.g. alice/digital_twins/tank"),
]


@router.get("/twins", response_model=list[TwinSummary])
def list_twins(settings: SettingsDep, actor: CurrentActor) -> list[TwinSummary]:
    """Every DT you can see: your own, then common's."""
    return service.list_twins(settings=settings, actor=actor)


@router.post("/twins", response_model=TwinDetail, status_code=201)
def create_twin(body: TwinCreate, settings: SettingsDep, actor: CurrentActor) -> TwinDetail:
    """Create a DT in your library from a template or by copying another DT."""
    return service.create_twin(
        settings=settings,
        actor=actor,
        name=body.name,
        template=body.template,
        source=body.source,
    )


@router.get("/twins/detail", response_model=TwinDetail)
def read_twin(settings: SettingsDep, actor: CurrentActor, path: TwinPath) -> TwinDetail:
    """A DT: description, files, declarations and validation problems."""
    return service.get_twin(settings=settings, actor=actor, path=path)


@router.get("/twins/validation", response_model=ValidationRead)
def validate_twin(settings: SettingsDep, actor: CurrentActor, path: TwinPath) -> ValidationRead:
    """Every error and warning of a DT, with file, line and column."""
    return service.validate_twin(settings=settings, actor=actor, path=path)


@router.get("/twins/plan", response_model=PlanRead)
def plan_twin(
    settings: SettingsDep,
    actor: CurrentActor,
    path: TwinPath,
    executor: Annotated[str | None, Query(pattern="^(local|ray)$")] = None,
) -> PlanRead:
    """A dry run: validity, assets, services and resources, before any compute starts."""
    return service.plan_twin(settings=settings, actor=actor, path=path, executor=executor)


@router.get("/twins/templates", response_model=list[TemplateRead])
def list_templates(actor: CurrentActor) -> list[TemplateRead]:
    """The built-in templates for new DTs."""
    del actor  # the dependency is the permission check
    return service.list_templates()


@router.get("/twins/configurations", response_model=list[ConfigurationRead])
def list_configurations(
    session: SessionDep, settings: SettingsDep, actor: CurrentActor, path: TwinPath
) -> list[TwinConfiguration]:
    """Your saved configurations of a DT."""
    return service.list_configurations(session=session, settings=settings, actor=actor, path=path)


@router.post("/twins/configurations", response_model=ConfigurationRead, status_code=201)
def save_configuration(
    body: ConfigurationWrite,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    path: TwinPath,
) -> TwinConfiguration:
    """Validate parameter values against the DT's manifest and save them under a name."""
    return service.save_configuration(
        session=session,
        settings=settings,
        actor=actor,
        path=path,
        name=body.name,
        values=body.values,
    )


@router.get("/configurations/{configuration_id}", response_model=ConfigurationRead)
def read_configuration(
    configuration_id: int, session: SessionDep, actor: CurrentActor
) -> TwinConfiguration:
    """One of your configurations."""
    return service.get_configuration(
        session=session, actor=actor, configuration_id=configuration_id
    )


@router.put("/configurations/{configuration_id}", response_model=ConfigurationRead)
def update_configuration(
    configuration_id: int,
    body: ConfigurationWrite,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> TwinConfiguration:
    """Rename a configuration or change its values."""
    return service.update_configuration(
        session=session,
        settings=settings,
        actor=actor,
        configuration_id=configuration_id,
        name=body.name,
        values=body.values,
    )


@router.delete("/configurations/{configuration_id}", status_code=204)
def delete_configuration(configuration_id: int, session: SessionDep, actor: CurrentActor) -> None:
    """Delete one of your configurations."""
    service.delete_configuration(session=session, actor=actor, configuration_id=configuration_id)


@router.get("/schemas/dt.json")
def manifest_schema(actor: CurrentActor) -> dict[str, Any]:
    """The JSON Schema of dt.yaml, version 1."""
    del actor  # the dependency is the permission check
    return json_schema()
