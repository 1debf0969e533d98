"""Digital twins: discovery in the libraries, validation, plans, configurations, creation."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.errors import Conflict, InvalidInput, NotFound
from dtaas.library import service as library
from dtaas.library.access import COMMON, Location
from dtaas.library.paths import HIDDEN_PREFIX
from dtaas.library.service import read_description
from dtaas.security.permissions import Permission, Principal, require
from dtaas.services import service as services
from dtaas.services.models import ServiceKind
from dtaas.twins.manifest import MANIFEST_FILE, Manifest, check_value, parse_memory
from dtaas.twins.models import TwinConfiguration
from dtaas.twins.schemas import (
    ParameterRead,
    PlanCheck,
    PlanRead,
    ProblemRead,
    TemplateRead,
    TwinDetail,
    TwinSummary,
    ValidationRead,
)
from dtaas.twins.validate import Problem, Report, load_manifest, phase_scripts, validate_folder

log = logging.getLogger(__name__)

KIND = "digital_twins"
TWIN_NAME = r"[a-z0-9][a-z0-9_-]{0,63}"
CONFIG_NAME = r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}"
TEMPLATES_DIR = Path(__file__).parent / "templates"
MAX_README_BYTES = 256 * 1024


def _twin_location(*, settings: Settings, actor: Principal, path: str, write: bool) -> Location:
    parts = path.strip("/").split("/")
    if len(parts) != 3 or parts[1] != KIND:
        raise NotFound(
            f"{path!r} is not a digital twin: a DT is a folder <library>/digital_twins/<name>.",
            loc=["path"],
        )
    return library.find_folder(settings=settings, actor=actor, path=path, write=write)


def _asset_checker(settings: Settings, actor: Principal) -> Any:
    def exists(reference: str) -> bool:
        path = reference if reference.startswith(f"{COMMON}/") else f"{actor.username}/{reference}"
        return library.is_readable(settings=settings, actor=actor, path=path)

    return exists


def _report(settings: Settings, actor: Principal, location: Location) -> Report:
    return validate_folder(location.real, asset_exists=_asset_checker(settings, actor))


def _summary(location: Location, report: Report) -> TwinSummary:
    manifest = report.manifest
    name = manifest.name if manifest else location.inner.rsplit("/", 1)[-1]
    description = read_description(location.real) or (manifest.description if manifest else None)
    return TwinSummary(
        path=location.path,
        name=name,
        area=location.area,
        description=description,
        phases=_phases(location.real, manifest),
        has_manifest=(location.real / MANIFEST_FILE).is_file(),
        valid=report.is_valid,
        errors=len(report.errors),
        warnings=len(report.warnings),
    )


def _phases(folder: Path, manifest: Manifest | None) -> list[str]:
    phases = phase_scripts(folder)
    for phase in manifest.phases if manifest else {}:
        if phase not in phases:
            phases.append(phase)
    return phases


def manifest_in(folder: Path) -> Manifest | None:
    """The valid manifest of a DT folder, or None (no dt.yaml, or one with errors)."""
    return load_manifest(folder)


def phases_in(folder: Path) -> list[str]:
    """The phases of a DT folder: its lifecycle scripts, then manifest-only overrides."""
    return _phases(folder, manifest_in(folder))


def manifest_of(*, settings: Settings, actor: Principal, path: str) -> Manifest | None:
    """The manifest of a DT the caller can read, or None.

    Raises: BadRequest; PermissionDenied; NotFound.
    """
    location = _twin_location(settings=settings, actor=actor, path=path, write=False)
    return manifest_in(location.real)


def list_twins(*, settings: Settings, actor: Principal) -> list[TwinSummary]:
    """Every DT the caller can see: their own first, then common's, by name."""
    twins: list[TwinSummary] = []
    for area in (actor.username, COMMON):
        kind_folder = library.find_folder(
            settings=settings, actor=actor, path=f"{area}/{KIND}", write=False
        )
        with os.scandir(kind_folder.real) as scan:
            names = sorted(
                e.name
                for e in scan
                if e.is_dir(follow_symlinks=False) and not e.name.startswith((HIDDEN_PREFIX, "."))
            )
        for name in names:
            location = _twin_location(
                settings=settings, actor=actor, path=f"{area}/{KIND}/{name}", write=False
            )
            twins.append(_summary(location, _report(settings, actor, location)))
    return twins


def _problem(problem: Problem) -> ProblemRead:
    return ProblemRead(
        severity=problem.severity,
        file=problem.file,
        line=problem.line,
        column=problem.column,
        message=problem.message,
    )


def _files(folder: Path) -> list[str]:
    files: list[str] = []
    for current, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(HIDDEN_PREFIX))
        base = Path(current).relative_to(folder)
        files.extend(
            (base / name).as_posix()
            for name in sorted(filenames)
            if not name.startswith(HIDDEN_PREFIX)
        )
        if len(files) > 500:
            break
    return [f.removeprefix("./") for f in files[:500]]


def get_twin(*, settings: Settings, actor: Principal, path: str) -> TwinDetail:
    """A DT with its description, files, declarations and validation problems.

    Raises: BadRequest; PermissionDenied; NotFound.
    """
    location = _twin_location(settings=settings, actor=actor, path=path, write=False)
    report = _report(settings, actor, location)
    manifest = report.manifest
    readme = None
    for name in ("README.md", "description.md"):
        candidate = location.real / name
        if candidate.is_file() and candidate.stat().st_size <= MAX_README_BYTES:
            readme = candidate.read_text(encoding="utf-8", errors="replace")
            break
    parameters = [
        ParameterRead(
            name=name,
            type=parameter.type.value,
            default=parameter.default,
            help=parameter.help,
            min=parameter.min,
            max=parameter.max,
            pattern=parameter.pattern,
            choices=parameter.choices,
            kind=parameter.kind,
            required=parameter.is_required,
        )
        for name, parameter in (manifest.parameters.items() if manifest else [])
    ]
    return TwinDetail(
        **_summary(location, report).model_dump(),
        readme=readme,
        files=_files(location.real),
        parameters=parameters,
        services=list(manifest.services) if manifest else [],
        assets=list(manifest.assets) if manifest else [],
        resources=manifest.resources.model_dump(exclude_none=True) if manifest else {},
        executor=manifest.executor if manifest else None,
        outputs=list(manifest.outputs) if manifest else [],
        telemetry=[t.model_dump() for t in manifest.telemetry] if manifest else [],
        problems=[_problem(p) for p in report.problems],
        writable=library.stat_entry(settings=settings, actor=actor, path=path).writable,
    )


def validate_twin(*, settings: Settings, actor: Principal, path: str) -> ValidationRead:
    """Every problem of a DT, errors apart from warnings.

    Raises: BadRequest; PermissionDenied; NotFound.
    """
    location = _twin_location(settings=settings, actor=actor, path=path, write=False)
    report = _report(settings, actor, location)
    return ValidationRead(
        path=location.path,
        valid=report.is_valid,
        errors=[_problem(p) for p in report.errors],
        warnings=[_problem(p) for p in report.warnings],
    )


def _service_endpoint(settings: Settings, service: str) -> str | None:
    # The catalogue's URL: on a laptop that is the embedded MQTT broker.
    return services.platform_url(settings, ServiceKind(service))


def _reachable(url: str) -> str | None:
    """None if a TCP connection to the URL's host and port succeeds, else why not."""
    parts = urlsplit(url)
    default_ports = {"mqtt": 1883, "amqp": 5672, "postgresql": 5432, "http": 80, "https": 443}
    port = parts.port or default_ports.get(parts.scheme.split("+")[0])
    if not parts.hostname or port is None:
        return f"{url} has no host and port"
    try:
        with socket.create_connection((parts.hostname, port), timeout=2):
            return None
    except OSError as exc:
        return f"cannot connect to {parts.hostname}:{port} ({exc.strerror or exc})"


def _memory_total() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def plan_twin(
    *, settings: Settings, actor: Principal, path: str, executor: str | None = None
) -> PlanRead:
    """A dry run before any compute starts: is the DT valid, are its assets there, are the
    services it needs reachable, do its resources fit the executor?

    Raises: BadRequest; PermissionDenied; NotFound.
    """
    require(actor, Permission.OPERATE)
    location = _twin_location(settings=settings, actor=actor, path=path, write=False)
    report = _report(settings, actor, location)
    manifest = report.manifest
    chosen = executor or (manifest.executor if manifest else None) or "local"
    checks = [
        PlanCheck(
            check="valid",
            ok=report.is_valid,
            message="no errors"
            if report.is_valid
            else f"{len(report.errors)} error(s); the first: {report.errors[0].format()}",
        )
    ]
    if manifest is not None:
        missing = [a for a in manifest.assets if not _asset_checker(settings, actor)(a)]
        checks.append(
            PlanCheck(
                check="assets",
                ok=not missing,
                message="all assets exist" if not missing else "missing: " + ", ".join(missing),
            )
        )
        for service in manifest.services:
            url = _service_endpoint(settings, service)
            problem = "no such service is configured (DTAAS_" + service.upper() + "_URL)"
            if url is not None:
                problem = _reachable(url) or ""
            checks.append(
                PlanCheck(
                    check=f"service {service}",
                    ok=not problem,
                    message=problem or f"{service} answers",
                )
            )
        checks.append(_resources_check(manifest, chosen))
    phases = _phases(location.real, manifest)
    return PlanRead(
        path=location.path,
        ready=all(check.ok for check in checks),
        executor=chosen,
        phases=phases,
        checks=checks,
    )


def _resources_check(manifest: Manifest, executor: str) -> PlanCheck:
    wanted = manifest.resources
    if executor != "local":
        # TODO(#7): ask the Ray cluster for its resources.
        return PlanCheck(
            check="resources", ok=True, message=f"checked by {executor} when the job is submitted"
        )
    problems = []
    cpus = os.cpu_count() or 1
    if wanted.cpu is not None and wanted.cpu > cpus:
        problems.append(f"asks for {wanted.cpu:g} CPUs; this machine has {cpus}")
    if wanted.memory is not None and parse_memory(wanted.memory) > _memory_total():
        problems.append(
            f"asks for {wanted.memory} of memory; this machine has {_memory_total() // 1024**2} MiB"
        )
    if wanted.gpu:
        problems.append(f"asks for {wanted.gpu} GPU(s); the local executor has none")
    return PlanCheck(
        check="resources",
        ok=not problems,
        message="; ".join(problems) or "fits the local executor",
    )


# --- configurations -------------------------------------------------------------------------


def check_values(
    manifest: Manifest | None, values: dict[str, Any]
) -> list[tuple[str, list[str | int]]]:
    """Every problem of parameter values against a manifest, one per field."""
    declared = manifest.parameters if manifest else {}
    problems: list[tuple[str, list[str | int]]] = []
    for name, value in values.items():
        if name not in declared:
            known = ", ".join(declared) or "none"
            problems.append(
                (f"unknown parameter {name!r}; this DT declares: {known}", ["values", name])
            )
            continue
        problem = check_value(declared[name], value)
        if problem:
            problems.append((f"{name}: {problem}", ["values", name]))
    for name, parameter in declared.items():
        if parameter.is_required and name not in values:
            problems.append((f"{name}: a value is required", ["values", name]))
    return problems


def effective_values(manifest: Manifest | None, values: dict[str, Any]) -> dict[str, Any]:
    """The values a run gets: the configuration's, then the manifest's defaults."""
    result = {
        name: parameter.default
        for name, parameter in (manifest.parameters.items() if manifest else [])
        if parameter.default is not None
    }
    result.update(values)
    return result


def _validated_values(
    *, settings: Settings, actor: Principal, path: str, values: dict[str, Any]
) -> str:
    location = _twin_location(settings=settings, actor=actor, path=path, write=False)
    report = _report(settings, actor, location)
    problems = check_values(report.manifest, values)
    if problems:
        raise InvalidInput(problems[0][0], loc=problems[0][1], problems=problems)
    return location.path


def _check_config_name(name: str) -> None:
    if not re.fullmatch(CONFIG_NAME, name):
        raise InvalidInput(
            f"{name!r} cannot name a configuration: use letters, digits, spaces, '.', '_' "
            "and '-', starting with a letter or digit, at most 100 characters.",
            loc=["name"],
        )


def list_configurations(
    *, session: Session, settings: Settings, actor: Principal, path: str
) -> list[TwinConfiguration]:
    """The caller's saved configurations of a DT, by name."""
    location = _twin_location(settings=settings, actor=actor, path=path, write=False)
    return list(
        session.scalars(
            select(TwinConfiguration)
            .where(
                TwinConfiguration.owner_id == actor.user_id,
                TwinConfiguration.twin_path == location.path,
            )
            .order_by(TwinConfiguration.name)
        )
    )


def save_configuration(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    path: str,
    name: str,
    values: dict[str, Any],
) -> TwinConfiguration:
    """Validate values against the DT's manifest and save them under a new name.

    Raises: PermissionDenied for viewers; NotFound; InvalidInput (one item per bad field);
    Conflict if the name is taken.
    """
    require(actor, Permission.WRITE)
    _check_config_name(name)
    twin_path = _validated_values(settings=settings, actor=actor, path=path, values=values)
    configuration = TwinConfiguration(
        owner_id=actor.user_id, twin_path=twin_path, name=name, values=values
    )
    session.add(configuration)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(
            f"You already have a configuration named {name!r} for this DT.", loc=["name"]
        ) from exc
    log.info("configuration saved twin=%s name=%s actor=%s", twin_path, name, actor.username)
    return configuration


def get_configuration(
    *, session: Session, actor: Principal, configuration_id: int
) -> TwinConfiguration:
    """One of the caller's configurations.

    Raises: NotFound (also for another user's).
    """
    configuration = session.get(TwinConfiguration, configuration_id)
    if configuration is None or configuration.owner_id != actor.user_id:
        raise NotFound(f"There is no configuration {configuration_id}.", loc=["configuration_id"])
    return configuration


def update_configuration(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    configuration_id: int,
    name: str,
    values: dict[str, Any],
) -> TwinConfiguration:
    """Rename a configuration or change its values, validated again.

    Raises: PermissionDenied; NotFound; InvalidInput; Conflict.
    """
    require(actor, Permission.WRITE)
    _check_config_name(name)
    configuration = get_configuration(
        session=session, actor=actor, configuration_id=configuration_id
    )
    _validated_values(settings=settings, actor=actor, path=configuration.twin_path, values=values)
    configuration.name = name
    configuration.values = values
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict(
            f"You already have a configuration named {name!r} for this DT.", loc=["name"]
        ) from exc
    return configuration


def delete_configuration(*, session: Session, actor: Principal, configuration_id: int) -> None:
    """Delete one of the caller's configurations.

    Raises: PermissionDenied; NotFound.
    """
    require(actor, Permission.WRITE)
    configuration = get_configuration(
        session=session, actor=actor, configuration_id=configuration_id
    )
    session.delete(configuration)
    session.commit()


# --- templates and creation -------------------------------------------------------------------


def list_templates() -> list[TemplateRead]:
    """The built-in templates a new DT can start from."""
    templates = []
    for folder in sorted(TEMPLATES_DIR.iterdir()):
        if folder.is_dir() and (folder / MANIFEST_FILE).is_file():
            manifest = Manifest.model_validate(_load_yaml((folder / MANIFEST_FILE).read_text()))
            templates.append(
                TemplateRead(
                    name=folder.name,
                    title=folder.name.replace("-", " ").capitalize(),
                    description=read_description(folder) or manifest.description,
                )
            )
    return templates


def _load_yaml(text: str) -> Any:
    return yaml.safe_load(text)


def create_twin(
    *,
    settings: Settings,
    actor: Principal,
    name: str,
    template: str | None = None,
    source: str | None = None,
) -> TwinDetail:
    """Create ``<you>/digital_twins/<name>`` from a built-in template or by copying a DT.

    Raises: PermissionDenied; InvalidInput unless exactly one of template and source is
    given; NotFound for an unknown template or source; Conflict if the name is taken.
    """
    require(actor, Permission.WRITE)
    # The name becomes a path component; it must be checked here, not only by the API.
    if not re.fullmatch(TWIN_NAME, name):
        raise InvalidInput(
            f"{name!r} cannot be a DT name: use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 64 characters.",
            loc=["name"],
        )
    if (template is None) == (source is None):
        raise InvalidInput("Give either a template or a source DT to copy.", loc=["template"])
    destination = f"{actor.username}/{KIND}/{name}"
    if library.is_readable(settings=settings, actor=actor, path=destination):
        raise Conflict(f"{destination} already exists; choose another name.", loc=["name"])
    if source is not None:
        _twin_location(settings=settings, actor=actor, path=source, write=False)
        library.copy(
            settings=settings, actor=actor, source=source, destination=destination, overwrite=False
        )
    else:
        known = {t.name for t in list_templates()}
        if template not in known:
            raise NotFound(
                f"There is no template {template!r}; choose one of {', '.join(sorted(known))}.",
                loc=["template"],
            )
        kind_folder = library.find_folder(
            settings=settings, actor=actor, path=f"{actor.username}/{KIND}", write=True
        )
        staging = kind_folder.real / f"{HIDDEN_PREFIX}{name}"
        shutil.copytree(TEMPLATES_DIR / str(template), staging)
        try:
            manifest_file = staging / MANIFEST_FILE
            manifest_file.write_text(manifest_file.read_text().replace("__NAME__", name))
            staging.rename(kind_folder.real / name)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    log.info(
        "twin created path=%s template=%s source=%s actor=%s",
        destination,
        template,
        source,
        actor.username,
    )
    return get_twin(settings=settings, actor=actor, path=destination)
