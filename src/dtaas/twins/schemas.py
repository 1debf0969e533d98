"""Request and response models of the twins domain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ConfigName = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
]
TwinName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemRead(BaseModel):
    severity: Literal["error", "warning"]
    file: str
    line: int | None
    column: int | None
    message: str


class TwinSummary(BaseModel):
    """A DT as listed: enough for a card."""

    path: str
    name: str
    area: str
    description: str | None
    phases: list[str]
    has_manifest: bool
    valid: bool
    errors: int
    warnings: int


class ParameterRead(BaseModel):
    name: str
    type: str
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    choices: list[Any] | None = None
    kind: str | None = None
    required: bool


class TwinDetail(TwinSummary):
    """A DT with its manifest's declarations and every validation problem."""

    readme: str | None
    files: list[str]
    parameters: list[ParameterRead]
    services: list[str]
    assets: list[str]
    resources: dict[str, Any]
    executor: str | None
    outputs: list[str]
    telemetry: list[dict[str, str]]
    problems: list[ProblemRead]
    writable: bool


class ValidationRead(BaseModel):
    path: str
    valid: bool
    errors: list[ProblemRead]
    warnings: list[ProblemRead]


class PlanCheck(BaseModel):
    check: str
    ok: bool
    message: str


class PlanRead(BaseModel):
    """A dry run: what would happen, and whether it can, before any compute starts."""

    path: str
    ready: bool
    executor: str
    phases: list[str]
    checks: list[PlanCheck]


class ConfigurationWrite(Strict):
    name: ConfigName
    values: dict[str, Any] = Field(default_factory=dict)


class ConfigurationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    twin_path: str
    name: str
    values: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class TemplateRead(BaseModel):
    name: str
    title: str
    description: str


class TwinCreate(Strict):
    """A new DT in your library, from a template or by copying an existing DT."""

    name: TwinName
    template: str | None = None
    source: str | None = Field(default=None, description="Library path of a DT to copy.")
