"""The ``dt.yaml`` manifest, version 1: what a digital twin declares about itself.

Every field is optional except ``manifest`` and ``name``; a DT without a manifest still
works from its ``lifecycle/`` scripts alone. The JSON Schema served at
``/api/v1/schemas/dt.json`` is generated from these models.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

MANIFEST_FILE = "dt.yaml"
PHASES = ("create", "execute", "analyze", "evolve", "save", "restore", "terminate", "clean")
SERVICES = ("mqtt", "amqp", "postgres", "influxdb")
KINDS = ("functions", "models", "tools", "data", "digital_twins")
IDENTIFIER = r"^[a-z_][a-z0-9_]{0,63}$"
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:(Ki|Mi|Gi|Ti|K|M|G|T)B?|(B))?$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_MEMORY_UNITS = {
    None: 1024**2,  # a bare number is MiB
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "B": 1,
}
_DURATION_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ManifestModel(BaseModel):
    """Manifest parts refuse unknown keys, so a typo is reported, not ignored.

    Frozen: a parsed manifest is cached and shared (``validate.load_manifest``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParameterType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    ENUM = "enum"
    ASSET = "asset"


class Parameter(ManifestModel):
    """A value the user sets when configuring the DT; reaches the job as DTAAS_PARAM_<NAME>."""

    type: ParameterType
    default: str | int | float | bool | None = None
    help: str = Field(default="", max_length=2000, description="Shown next to the form field.")
    min: float | None = Field(
        default=None, allow_inf_nan=False, description="Smallest value (int, float)."
    )
    max: float | None = Field(
        default=None, allow_inf_nan=False, description="Largest value (int, float)."
    )
    pattern: str | None = Field(default=None, description="Regular expression (string).")
    choices: list[str | int | float] | None = Field(default=None, description="Values (enum).")
    kind: Literal["functions", "models", "tools", "data", "digital_twins"] | None = Field(
        default=None, description="Kind the referenced asset must have (asset)."
    )
    required: bool | None = Field(
        default=None, description="Must be set; default: required when there is no default."
    )

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _fits_its_type(self) -> Parameter:
        problems = parameter_problems(self)
        if problems:
            field, message = problems[0]
            # ctx.field lets the validator point at the key; ctx.problems carries them all.
            raise PydanticCustomError("parameter", message, {"field": field, "problems": problems})
        return self

    @property
    def is_required(self) -> bool:
        """Whether a configuration must give a value."""
        return self.required if self.required is not None else self.default is None


def parameter_problems(parameter: Parameter) -> list[tuple[str, str]]:
    """Every (field, message) that does not fit the parameter's type."""
    problems: list[tuple[str, str]] = []
    kind = parameter.type
    numeric = kind in (ParameterType.INT, ParameterType.FLOAT)
    for bound in ("min", "max"):
        if getattr(parameter, bound) is not None and not numeric:
            problems.append((bound, f"{bound} applies to int and float parameters, not {kind}"))
    low, high = parameter.min, parameter.max
    if low is not None and high is not None and low > high:
        problems.append(("max", f"max ({high:g}) is smaller than min ({low:g})"))
    if parameter.pattern is not None and kind != ParameterType.STRING:
        problems.append(("pattern", f"pattern applies to string parameters, not {kind}"))
    if kind == ParameterType.ENUM and not parameter.choices:
        field = "type" if parameter.choices is None else "choices"
        problems.append((field, "an enum parameter needs `choices:`, a non-empty list of values"))
    if parameter.choices is not None and kind != ParameterType.ENUM:
        problems.append(("choices", f"choices apply to enum parameters, not {kind}"))
    if parameter.kind is not None and kind != ParameterType.ASSET:
        problems.append(("kind", f"kind applies to asset parameters, not {kind}"))
    if parameter.default is not None and not problems:
        problem = check_value(parameter, parameter.default)
        if problem:
            problems.append(
                ("default", f"the default {parameter.default!r} is not valid: {problem}")
            )
    return problems


def check_value(parameter: Parameter, value: Any) -> str | None:
    """Why ``value`` is not valid for ``parameter``, or None when it is."""
    kind = parameter.type
    if kind == ParameterType.BOOL:
        return None if isinstance(value, bool) else "expected true or false"
    if kind == ParameterType.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            return "expected a whole number"
    elif kind == ParameterType.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        if not math.isfinite(value):
            return "expected a finite number"
    elif kind == ParameterType.ENUM:
        choices = parameter.choices or []
        if value not in choices or isinstance(value, bool):
            return "expected one of " + ", ".join(repr(c) for c in choices)
        return None
    elif not isinstance(value, str):
        return "expected text"
    if kind in (ParameterType.INT, ParameterType.FLOAT):
        if parameter.min is not None and value < parameter.min:
            return f"must be at least {parameter.min:g}"
        if parameter.max is not None and value > parameter.max:
            return f"must be at most {parameter.max:g}"
        return None
    pattern = parameter.pattern
    if kind == ParameterType.STRING and pattern is not None and not re.fullmatch(pattern, value):
        return f"must match the pattern {pattern}"
    if kind == ParameterType.ASSET:
        return _check_asset_reference(value, parameter.kind)
    return None


def _check_asset_reference(value: str, kind: str | None) -> str | None:
    parts = value.strip("/").split("/")
    at = 1 if parts[0] == "common" else 0
    if (
        not value
        or value.startswith("/")
        or ".." in parts
        or len(parts) < at + 2
        or parts[at] not in KINDS
    ):
        return "expected a library path such as common/models/tank.fmu or models/tank.fmu"
    first = parts[at]
    if kind is not None and first != kind:
        return f"expected an asset of kind {kind}"
    return None


def parse_memory(value: int | str) -> int:
    """Bytes from ``512`` (MiB), ``"512Mi"``, ``"2G"``, ``"1.5Gi"``."""
    if isinstance(value, int):
        return value * 1024**2
    match = _MEMORY.match(value.strip())
    if match is None:
        raise ValueError(f"memory {value!r} is not a size; write e.g. 512Mi or 2Gi")
    number, unit, byte = match.groups()
    return int(float(number) * _MEMORY_UNITS[unit or byte])


def parse_duration(value: int | str) -> int:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, int):
        return value
    match = _DURATION.match(value.strip())
    if match is None:
        raise ValueError(f"duration {value!r} is not a time; write e.g. 90s, 30m or 2h")
    number, unit = match.groups()
    return int(float(number) * _DURATION_UNITS[unit])


class Resources(ManifestModel):
    """What one job of the DT may use; the executor enforces it."""

    cpu: float | None = Field(default=None, gt=0, le=1024, description="CPU cores.")
    memory: int | str | None = Field(default=None, description="e.g. 512Mi, 2Gi (bare = MiB).")
    gpu: int | None = Field(default=None, ge=0, le=64)
    wall_time: int | str | None = Field(
        default=None, description="Longest run of one phase, e.g. 30m (bare = seconds)."
    )

    @field_validator("memory")
    @classmethod
    def _memory_parses(cls, value: int | str | None) -> int | str | None:
        if value is not None and parse_memory(value) <= 0:
            raise ValueError("memory must be more than 0")
        return value

    @field_validator("wall_time")
    @classmethod
    def _duration_parses(cls, value: int | str | None) -> int | str | None:
        if value is not None and parse_duration(value) <= 0:
            raise ValueError("wall_time must be more than 0 seconds")
        return value


class PhaseOverride(ManifestModel):
    """Run this command for the phase instead of ``lifecycle/<phase>``."""

    command: Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class Serve(ManifestModel):
    """The DT is a service: while ``phase`` runs it answers HTTP on ``$DTAAS_HTTP_PORT``
    (127.0.0.1), and the platform proxies it at ``/services/<instance id>/``."""

    phase: PhaseName = "execute"


class TelemetryField(ManifestModel):
    """A numeric field of the DT's telemetry to chart on its Explore page."""

    field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")]
    label: str = ""
    unit: str = ""


def _asset_path(value: str) -> str:
    problem = _check_asset_reference(value, None)
    if problem:
        raise ValueError(problem)
    return value


def _output_glob(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError("an output must be a glob inside the DT folder, e.g. results/*.csv")
    return value


ParameterName = Annotated[str, StringConstraints(pattern=IDENTIFIER)]
PhaseName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
OutputGlob = Annotated[
    str, StringConstraints(min_length=1, max_length=512), AfterValidator(_output_glob)
]
AssetPath = Annotated[
    str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_asset_path)
]


class Manifest(ManifestModel):
    """A digital twin's ``dt.yaml``."""

    manifest: Literal[1] = Field(description="Format version of this file; always 1.")
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    description: str = Field(default="", max_length=10_000)
    version: str = Field(default="", max_length=64, description="The DT's own version.")
    parameters: dict[ParameterName, Parameter] = Field(default_factory=dict)
    assets: list[AssetPath] = Field(
        default_factory=list,
        description="Library paths the DT uses: common/<kind>/... or <kind>/... (your own).",
    )
    services: list[Literal["mqtt", "amqp", "postgres", "influxdb"]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    executor: Literal["local", "ray"] | None = None
    phases: dict[PhaseName, PhaseOverride] = Field(default_factory=dict)
    outputs: list[OutputGlob] = Field(default_factory=list, description="Globs of result files.")
    telemetry: list[TelemetryField] = Field(default_factory=list)
    serve: Serve | None = Field(
        default=None,
        description="A service DT: its phase answers HTTP on $DTAAS_HTTP_PORT, which the "
        "platform proxies at /services/<instance id>/.",
    )

    @field_validator("services")
    @classmethod
    def _services_once(cls, values: list[str]) -> list[str]:
        for index, service in enumerate(values):
            if service in values[:index]:
                raise PydanticCustomError(
                    "repeated_service",
                    "service '{service}' is listed twice",
                    {"service": service, "index": index},
                )
        return values


def json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12)."""
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "/api/v1/schemas/dt.json"
    schema["title"] = "dt.yaml (dtaas digital twin manifest, version 1)"
    for named in ("parameters", "phases"):
        # Names outside the pattern are refused by the validator; let editors say so too.
        schema["properties"][named]["additionalProperties"] = False
    return schema
