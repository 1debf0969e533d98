"""The Digital Twins pages: the DT cards, a DT's page, its dry run and configuration form."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markdown_it import MarkdownIt
from markupsafe import Markup
from pydantic import TypeAdapter, ValidationError

from dtaas.db import SessionDep
from dtaas.errors import InvalidInput
from dtaas.library.access import COMMON
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.security.permissions import Permission, Principal
from dtaas.twins import service as twins
from dtaas.twins.models import TwinConfiguration
from dtaas.twins.schemas import ConfigName, ParameterRead, TwinDetail
from dtaas.web.pages import render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

# Raw HTML in Markdown stays escaped, and markdown-it refuses javascript: links.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_config_name = TypeAdapter(ConfigName)
_TWIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VALUE_PREFIX = "values."
NAV_HREF = "/twins"  # the pages below /twins highlight "Digital Twins" in the navigation

TwinPath = Annotated[str, Query(max_length=1024)]


def _markdown_html(text: str | None, *, top: int = 3) -> Markup | None:
    """Markdown as HTML, its headings moved down to start at ``<h{top}>`` under the page's."""
    if not text:
        return None
    tokens = _markdown.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + top - 1, 6)}"
    html = _markdown.renderer.render(tokens, _markdown.options, {})
    return Markup(html)  # noqa: S704  # html disabled in the renderer


def _view_url(path: str) -> str:
    return "/twins/view?path=" + quote(path, safe="/")


def _library_url(area: str, folder: str) -> str:
    scope = "common" if area == COMMON else "private"
    return f"/library?kind={twins.KIND}&scope={scope}&path={quote(folder, safe='/')}"


def _file_links(twin: TwinDetail) -> list[tuple[str, str]]:
    """Each file with the Library page opened on its folder."""
    return [
        (name, _library_url(twin.area, f"{twin.path}/{name}".rsplit("/", 1)[0]))
        for name in twin.files
    ]


async def _form_fields(request: Request) -> dict[str, str]:
    """Every text field of a posted form; parameters are named by the DT, not by the route."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


FormFields = Annotated[dict[str, str], Depends(_form_fields)]


# --- the configuration form --------------------------------------------------------------------


@dataclass
class ParameterField:
    """One parameter as a form field: what to show, what was typed and what is wrong."""

    parameter: ParameterRead
    text: str = ""
    checked: bool = False
    error: str | None = None

    @property
    def input_id(self) -> str:
        return f"param-{self.parameter.name}"

    @property
    def form_name(self) -> str:
        return VALUE_PREFIX + self.parameter.name

    @property
    def step(self) -> str:
        return "1" if self.parameter.type == "int" else "any"

    @property
    def min_text(self) -> str | None:
        return _number_text(self.parameter.min)

    @property
    def max_text(self) -> str | None:
        return _number_text(self.parameter.max)

    @property
    def choices(self) -> list[tuple[str, str]]:
        return [(_as_text(choice), _as_text(choice)) for choice in self.parameter.choices or []]


@dataclass
class ConfigurationForm:
    """The state of the configuration form: values as typed, and a message per bad field."""

    fields: list[ParameterField]
    name: str = ""
    configuration_id: int | None = None
    name_error: str | None = None
    form_error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def has_errors(self) -> bool:
        return bool(self.name_error or self.form_error or any(f.error for f in self.fields))

    def add_problems(self, problems: list[tuple[str, list[str | int]]]) -> None:
        """Put each problem the service found next to its field."""
        by_name = {f.parameter.name: f for f in self.fields}
        for message, loc in problems:
            target = str(loc[-1]) if loc else ""
            if loc[:1] == ["name"]:
                self.name_error = message
            elif target in by_name:
                by_name[target].error = message.removeprefix(f"{target}: ")
            else:
                self.form_error = message


def _number_text(value: float | None) -> str | None:
    """A bound as people write it: 1000000 rather than 1e+06, 0.05 rather than 0.050000."""
    if value is None:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _blank_form(
    twin: TwinDetail, configuration: TwinConfiguration | None = None
) -> ConfigurationForm:
    """The form with the defaults, or with a saved configuration's values."""
    values = configuration.values if configuration is not None else {}
    fields = []
    for parameter in twin.parameters:
        value = values.get(parameter.name, parameter.default)
        fields.append(
            ParameterField(parameter=parameter, text=_as_text(value), checked=value is True)
        )
    return ConfigurationForm(
        fields=fields,
        name=configuration.name if configuration is not None else "",
        configuration_id=configuration.id if configuration is not None else None,
    )


class _Omitted(Exception):
    """An empty field: the parameter is left out, so the manifest's default applies."""


def _convert(parameter: ParameterRead, raw: str | None) -> Any:
    """A form string as the parameter's type.

    Raises: ValueError with the message for the field; _Omitted for an empty field.
    """
    if parameter.type == "bool":
        return raw is not None  # a checkbox sends its value only when it is on
    text = (raw or "").strip()
    if not text:
        raise _Omitted
    if parameter.type == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if parameter.type == "float":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number; write e.g. 12.5") from None
        if not math.isfinite(number):
            raise ValueError(f"{text!r} is not a finite number")
        return number
    if parameter.type == "enum":
        for choice in parameter.choices or []:
            if _as_text(choice) == text:
                return choice
        raise ValueError(f"{text!r} is not one of the choices")
    return text


def _parse_form(twin: TwinDetail, fields: dict[str, str]) -> ConfigurationForm:
    """The posted form, each value converted to its parameter's type where it parses."""
    form = ConfigurationForm(fields=[], name=fields.get("name", ""))
    raw_id = fields.get("configuration_id", "").strip()
    if raw_id:
        try:
            form.configuration_id = int(raw_id)
        except ValueError:
            form.form_error = "The form is damaged; reload the page and try again."
    try:
        form.name = _config_name.validate_python(form.name)
    except ValidationError:
        form.name_error = (
            "Give the configuration a name: letters, digits, spaces, '.', '_' and '-', "
            "starting with a letter or digit, at most 100 characters."
        )
    for parameter in twin.parameters:
        raw = fields.get(VALUE_PREFIX + parameter.name)
        item = ParameterField(parameter=parameter, text=raw or "", checked=raw is not None)
        form.fields.append(item)
        try:
            form.values[parameter.name] = _convert(parameter, raw)
        except _Omitted:
            pass
        except ValueError as exc:
            item.error = str(exc)
    return form


def _configurations(
    request: Request,
    *,
    session: SessionDep,
    settings: SettingsDep,
    actor: Principal,
    twin: TwinDetail,
    form: ConfigurationForm,
    status: int = 200,
    notice: str | None = None,
) -> HTMLResponse:
    saved = twins.list_configurations(
        session=session, settings=settings, actor=actor, path=twin.path
    )
    return render(
        request,
        "_twin_configurations.html",
        actor=actor,
        status=status,
        twin=twin,
        form=form,
        configurations=saved,
        notice=notice,
        can_write=actor.has(Permission.WRITE),
    )


# --- pages -------------------------------------------------------------------------------------


@router.get("/twins", response_class=HTMLResponse)
def twins_page(request: Request, settings: SettingsDep, actor: CurrentActor) -> HTMLResponse:
    """Every DT you can see as a card, and the form for a new one."""
    listed = twins.list_twins(settings=settings, actor=actor)
    return render(
        request,
        "twins.html",
        actor=actor,
        mine=[t for t in listed if t.area == actor.username],
        common=[t for t in listed if t.area != actor.username],
        templates=twins.list_templates(),
        descriptions={t.path: _markdown_html(t.description) for t in listed},
        view_url=_view_url,
        can_write=actor.has(Permission.WRITE),
    )


@router.post("/twins")
def create_twin(
    request: Request,
    settings: SettingsDep,
    actor: CurrentActor,
    name: Annotated[str, Form(max_length=200)],
    origin: Annotated[Literal["template", "copy"], Form()] = "template",
    template: Annotated[str, Form(max_length=200)] = "",
    source: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Create a DT from a template or as a copy, then open its page."""
    name = name.strip()
    if not _TWIN_NAME.match(name):
        raise InvalidInput(
            f"{name!r} cannot be a DT name: use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit, at most 64 characters.",
            loc=["name"],
        )
    created = twins.create_twin(
        settings=settings,
        actor=actor,
        name=name,
        template=template if origin == "template" else None,
        source=source if origin == "copy" else None,
    )
    url = _view_url(created.path)
    if "HX-Request" in request.headers:
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.get("/twins/view", response_class=HTMLResponse)
def twin_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    path: TwinPath,
) -> HTMLResponse:
    """A DT: description, phases, files, problems, dry run and configurations."""
    twin = twins.get_twin(settings=settings, actor=actor, path=path)
    return render(
        request,
        "twins_view.html",
        actor=actor,
        path=NAV_HREF,
        twin=twin,
        readme=_markdown_html(twin.readme or twin.description),
        library_url=_library_url(twin.area, twin.path),
        file_links=_file_links(twin),
        form=_blank_form(twin),
        configurations=twins.list_configurations(
            session=session, settings=settings, actor=actor, path=twin.path
        ),
        notice=None,
        can_write=actor.has(Permission.WRITE),
        can_operate=actor.has(Permission.OPERATE),
    )


@router.get("/twins/plan", response_class=HTMLResponse)
def twin_plan(
    request: Request, settings: SettingsDep, actor: CurrentActor, path: TwinPath
) -> HTMLResponse:
    """The dry run of a DT (htmx fragment)."""
    plan = twins.plan_twin(settings=settings, actor=actor, path=path)
    return render(request, "_twin_plan.html", actor=actor, plan=plan)


@router.get("/twins/configurations", response_class=HTMLResponse)
def configuration_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    path: TwinPath,
) -> HTMLResponse:
    """The empty configuration form and the saved configurations (htmx fragment)."""
    twin = twins.get_twin(settings=settings, actor=actor, path=path)
    return _configurations(
        request, session=session, settings=settings, actor=actor, twin=twin, form=_blank_form(twin)
    )


@router.get("/twins/configurations/{configuration_id}/edit", response_class=HTMLResponse)
def edit_configuration(
    request: Request,
    configuration_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
) -> HTMLResponse:
    """The configuration form filled with a saved configuration (htmx fragment)."""
    configuration = twins.get_configuration(
        session=session, actor=actor, configuration_id=configuration_id
    )
    twin = twins.get_twin(settings=settings, actor=actor, path=configuration.twin_path)
    return _configurations(
        request,
        session=session,
        settings=settings,
        actor=actor,
        twin=twin,
        form=_blank_form(twin, configuration),
    )


@router.post("/twins/configurations", response_class=HTMLResponse)
def save_configuration(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    path: TwinPath,
    fields: FormFields,
) -> HTMLResponse:
    """Save a new configuration or change one; bad fields are shown inline (htmx fragment)."""
    twin = twins.get_twin(settings=settings, actor=actor, path=path)
    form = _parse_form(twin, fields)
    if not form.has_errors:
        try:
            if form.configuration_id is None:
                twins.save_configuration(
                    session=session,
                    settings=settings,
                    actor=actor,
                    path=twin.path,
                    name=form.name,
                    values=form.values,
                )
            else:
                twins.update_configuration(
                    session=session,
                    settings=settings,
                    actor=actor,
                    configuration_id=form.configuration_id,
                    name=form.name,
                    values=form.values,
                )
        except InvalidInput as error:
            # The one domain error caught in a route: the common handler shows a single
            # joined message, while this form shows each problem under its own field.
            form.add_problems(error.problems or [(error.message, error.loc)])
    if form.has_errors:
        return _configurations(
            request,
            session=session,
            settings=settings,
            actor=actor,
            twin=twin,
            form=form,
            status=422,
        )
    return _configurations(
        request,
        session=session,
        settings=settings,
        actor=actor,
        twin=twin,
        form=_blank_form(twin),
        notice=f"Configuration {form.name!r} saved.",
    )


@router.delete("/twins/configurations/{configuration_id}", response_class=HTMLResponse)
def delete_configuration(
    request: Request,
    configuration_id: int,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    path: TwinPath,
) -> HTMLResponse:
    """Delete a saved configuration (htmx fragment: the form and the remaining ones)."""
    twins.delete_configuration(session=session, actor=actor, configuration_id=configuration_id)
    twin = twins.get_twin(settings=settings, actor=actor, path=path)
    return _configurations(
        request,
        session=session,
        settings=settings,
        actor=actor,
        twin=twin,
        form=_blank_form(twin),
        notice="Configuration deleted.",
    )
