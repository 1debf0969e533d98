"""The Services page: a card per service, health loaded after the page, and the admins' form.

The page renders from the catalogue and the health cache only, so a slow or blackholed
service never delays it; each card then fetches its own health with htmx. The fragments
live under ``/service-catalogue/`` so that ``/services/<name>/`` stays free for DTs that
run as services.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.db import SessionDep
from dtaas.errors import Conflict, InvalidInput
from dtaas.security.deps import CurrentActor, SettingsDep
from dtaas.security.permissions import Permission, Principal
from dtaas.services import registry
from dtaas.services import service as services
from dtaas.services.deps import MonitorDep, ServiceAdmin
from dtaas.services.health import HealthMonitor
from dtaas.services.models import ServiceKind
from dtaas.services.schemas import ServiceRead
from dtaas.web.pages import render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

UI = "/service-catalogue"
FIELDS = ("name", "kind", "url", "username", "password", "description")
ServiceName = Annotated[str, Path(max_length=64)]

# How a DT's code reaches each platform service; the job's environment has the URL.
SNIPPETS: dict[ServiceKind, str] = {
    ServiceKind.MQTT: """\
import os
from urllib.parse import urlsplit
import paho.mqtt.client as mqtt

url = urlsplit(os.environ["DTAAS_MQTT_URL"])
prefix = os.environ["DTAAS_TOPIC_PREFIX"]  # dtaas/<user>/<instance>/
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
if url.username:
    client.username_pw_set(url.username, url.password)
client.connect(url.hostname, url.port or 1883)
client.publish(prefix + "telemetry", '{"level": 0.42}')""",
    ServiceKind.AMQP: """\
import os
import pika

connection = pika.BlockingConnection(pika.URLParameters(os.environ["DTAAS_AMQP_URL"]))
channel = connection.channel()
channel.queue_declare(queue="readings")
channel.basic_publish(exchange="", routing_key="readings", body=b"42")""",
    ServiceKind.POSTGRES: """\
import os
import psycopg

with psycopg.connect(os.environ["DTAAS_POSTGRES_URL"]) as connection:
    print(connection.execute("SELECT version()").fetchone())""",
    ServiceKind.INFLUXDB: """\
import os
import urllib.request

base = os.environ["DTAAS_INFLUXDB_URL"]
print(urllib.request.urlopen(base + "/health").read())""",
}


@dataclass
class ServiceForm:
    """The register/edit form: values as typed and a message per bad field."""

    name: str = ""
    kind: str = ServiceKind.HTTP.value
    url: str = ""
    username: str = ""
    description: str = ""
    editing: str | None = None  # the name of the service being edited
    has_password: bool = False
    errors: dict[str, str] = field(default_factory=dict)
    form_error: str | None = None

    @classmethod
    def of(cls, service: ServiceRead) -> ServiceForm:
        return cls(
            name=service.name,
            kind=service.kind.value,
            url=service.url,
            username=service.username or "",
            description=service.description,
            editing=service.name,
            has_password=service.has_password,
        )

    def add_error(self, error: InvalidInput | Conflict) -> None:
        """Put each problem next to its field; others above the form."""
        problems = error.problems if isinstance(error, InvalidInput) else []
        for message, loc in problems or [(error.message, error.loc)]:
            target = str(loc[-1]) if loc else ""
            if target in FIELDS:
                self.errors.setdefault(target, message)
            else:
                self.form_error = message


def _main(
    request: Request,
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    monitor: HealthMonitor,
    form: ServiceForm | None = None,
    notice: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    """The cards and the form: what every change of the catalogue re-renders."""
    listed = services.list_services(
        session=session, settings=settings, actor=actor, monitor=monitor, check=False
    )
    return render(
        request,
        "_services_main.html",
        actor=actor,
        status=status,
        **_context(actor, listed, form or ServiceForm(), notice),
    )


def _context(
    actor: Principal, listed: list[ServiceRead], form: ServiceForm, notice: str | None
) -> dict[str, Any]:
    return {
        "services": listed,
        "form": form,
        "notice": notice,
        "kinds": [kind.value for kind in ServiceKind],
        "snippets": SNIPPETS,
        "can_manage": actor.has(Permission.MANAGE_SERVICES),
        "ui": UI,
    }


@router.get("/services", response_class=HTMLResponse)
def services_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    monitor: MonitorDep,
) -> HTMLResponse:
    """Every service as a card; health arrives by htmx once the page is shown."""
    listed = services.list_services(
        session=session, settings=settings, actor=actor, monitor=monitor, check=False
    )
    return render(
        request, "services.html", actor=actor, **_context(actor, listed, ServiceForm(), None)
    )


@router.get(UI + "/{name}/health", response_class=HTMLResponse)
def service_health(
    request: Request,
    name: ServiceName,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    monitor: MonitorDep,
) -> HTMLResponse:
    """A card's health (htmx fragment); a recent result is reused."""
    found = services.get_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name
    )
    return render(request, "_service_health.html", actor=actor, service=found, ui=UI)


@router.post(UI + "/{name}/check", response_class=HTMLResponse)
def check_service(
    request: Request,
    name: ServiceName,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    monitor: MonitorDep,
) -> HTMLResponse:
    """Check a service now (htmx fragment)."""
    found = services.check_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name
    )
    return render(request, "_service_health.html", actor=actor, service=found, ui=UI)


@router.get(UI + "/form", response_class=HTMLResponse)
def blank_form(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: ServiceAdmin,
    monitor: MonitorDep,
) -> HTMLResponse:
    """The catalogue with an empty form, e.g. to cancel an edit (htmx fragment)."""
    return _main(request, session=session, settings=settings, actor=actor, monitor=monitor)


@router.get(UI + "/{name}/edit", response_class=HTMLResponse)
def edit_form(
    request: Request,
    name: ServiceName,
    session: SessionDep,
    settings: SettingsDep,
    actor: ServiceAdmin,
    monitor: MonitorDep,
) -> HTMLResponse:
    """The catalogue with the form filled for a registered service (htmx fragment)."""
    found = services.get_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name, check=False
    )
    if found.source != "registered":
        raise Conflict(
            f"{name!r} is a platform service; change it in the platform's settings.",
            loc=["name"],
        )
    return _main(
        request,
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        form=ServiceForm.of(found),
    )


@router.post(UI, response_class=HTMLResponse)
def register_service(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: ServiceAdmin,
    monitor: MonitorDep,
    name: Annotated[str, Form(max_length=200)] = "",
    kind: Annotated[str, Form(max_length=32)] = "",
    url: Annotated[str, Form(max_length=4096)] = "",
    username: Annotated[str, Form(max_length=1024)] = "",
    password: Annotated[str, Form(max_length=2048)] = "",
    description: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    """Register a service; bad fields are shown next to themselves (htmx fragment)."""
    form = ServiceForm(name=name, kind=kind, url=url, username=username, description=description)
    try:
        registry.register_service(
            session=session,
            settings=settings,
            actor=actor,
            monitor=monitor,
            name=name,
            kind=kind,
            url=url,
            username=username or None,
            password=password or None,
            description=description,
        )
    except (InvalidInput, Conflict) as error:
        # Caught here, unlike elsewhere: the form shows each problem under its own field,
        # where the common handler would show one joined message.
        form.add_error(error)
        return _main(
            request,
            session=session,
            settings=settings,
            actor=actor,
            monitor=monitor,
            form=form,
            status=error.status_code,
        )
    return _main(
        request,
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        notice=f"Service {name.strip()!r} registered.",
    )


@router.post(UI + "/{name}", response_class=HTMLResponse)
def update_service(
    request: Request,
    name: ServiceName,
    session: SessionDep,
    settings: SettingsDep,
    actor: ServiceAdmin,
    monitor: MonitorDep,
    kind: Annotated[str, Form(max_length=32)] = "",
    url: Annotated[str, Form(max_length=4096)] = "",
    username: Annotated[str, Form(max_length=1024)] = "",
    password: Annotated[str, Form(max_length=2048)] = "",
    remove_password: Annotated[bool, Form()] = False,
    description: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    """Change a registered service; an empty password field keeps the stored one."""
    stored = services.get_service(
        session=session, settings=settings, actor=actor, monitor=monitor, name=name, check=False
    )
    form = ServiceForm(
        name=name,
        kind=kind,
        url=url,
        username=username,
        description=description,
        editing=name,
        has_password=stored.has_password,
    )
    new_password: str | registry.Keep | None = registry.KEEP
    if remove_password:
        new_password = None
    elif password:
        new_password = password
    try:
        registry.update_service(
            session=session,
            settings=settings,
            actor=actor,
            monitor=monitor,
            name=name,
            kind=kind,
            url=url,
            username=username or None,
            password=new_password,
            description=description,
        )
    except (InvalidInput, Conflict) as error:
        form.add_error(error)  # each problem under its field, as when registering
        return _main(
            request,
            session=session,
            settings=settings,
            actor=actor,
            monitor=monitor,
            form=form,
            status=error.status_code,
        )
    return _main(
        request,
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        notice=f"Service {name!r} saved.",
    )


@router.delete(UI + "/{name}", response_class=HTMLResponse)
def delete_service(
    request: Request,
    name: ServiceName,
    session: SessionDep,
    settings: SettingsDep,
    actor: ServiceAdmin,
    monitor: MonitorDep,
) -> HTMLResponse:
    """Remove a registered service (htmx fragment: the catalogue without it)."""
    registry.delete_service(session=session, actor=actor, monitor=monitor, name=name)
    return _main(
        request,
        session=session,
        settings=settings,
        actor=actor,
        monitor=monitor,
        notice=f"Service {name!r} removed.",
    )
