"""Rendering pages: the template environment, the navigation and error pages."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from dtaas.security.permissions import Permission, Principal

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
NOT_PAGES = ("/api/", "/healthz", "/metrics", "/static/")
_ELEMENT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")

templates = Jinja2Templates(directory=TEMPLATES_DIR)


@dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    href: str
    permission: Permission


# Only pages that work are listed; each domain adds its page here when it has one.
NAVIGATION: tuple[NavItem, ...] = (
    NavItem("Home", "/", Permission.READ),
    NavItem("Library", "/library", Permission.READ),
    NavItem("Digital Twins", "/twins", Permission.READ),
    NavItem("Instances", "/instances", Permission.READ),
    NavItem("Services", "/services", Permission.READ),
    NavItem("Users", "/admin/users", Permission.MANAGE_USERS),
    NavItem("Cluster", "/admin/cluster", Permission.VIEW_METRICS),
    NavItem("Account", "/account", Permission.READ),
)


def wants_page(request: Request) -> bool:
    """Whether an error on this request should be shown as HTML rather than JSON."""
    if request.url.path.startswith(NOT_PAGES):
        return False
    return "HX-Request" in request.headers or "text/html" in request.headers.get("accept", "")


def render(
    request: Request,
    name: str,
    *,
    actor: Principal | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a template with the navigation and CSRF token for ``actor``."""
    nav = [item for item in NAVIGATION if actor is not None and actor.has(item.permission)]
    return templates.TemplateResponse(
        request,
        name,
        {"actor": actor, "nav": nav, "path": request.url.path, **context},
        status_code=status,
        headers=headers,
    )


def login_page(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    next_url: str = "/",
    username: str = "",
) -> HTMLResponse:
    """The sign-in page, with a fresh double-submit CSRF token for the form."""
    from dtaas.security.deps import LOGIN_CSRF_COOKIE  # here to keep imports one-way at load

    csrf = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        actor=None,
        status=status,
        error=error,
        next_url=safe_next(next_url),
        username=username,
        login_csrf=csrf,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/login", max_age=3600
    )
    return response


def safe_next(value: str | None) -> str:
    """Only local paths are followed after sign-in, never another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def render_error(
    request: Request,
    *,
    status: int,
    detail: list[dict[str, Any]],
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """An error as a page, or as a fragment into the failing form for htmx requests."""
    message = "; ".join(str(item["msg"]) for item in detail)
    if "HX-Request" in request.headers:
        out = dict(headers or {})
        # A form shows errors in its element "<form id>-error"; other elements name
        # their error slot in an X-Error-Target header.
        target = request.headers.get("X-Error-Target", "").removeprefix("#")
        if not _ELEMENT_ID.match(target):
            target = request.headers.get("HX-Trigger", "") + "-error"
        if _ELEMENT_ID.match(target):
            out["HX-Retarget"] = f"#{target}"
            out["HX-Reswap"] = "innerHTML"
        if status == 401:
            current = urlsplit(request.headers.get("HX-Current-URL", "")).path
            out["HX-Redirect"] = "/login?next=" + quote(safe_next(current))
        return render(
            request, "_error.html", actor=None, status=status, headers=out, message=message
        )
    if status == 401 or request.url.path == "/login":
        # A failed sign-in keeps what was typed; the form body cannot be read again here.
        form: dict[str, str] = getattr(request.state, "login_form", {})
        here = "/" if request.url.path == "/login" else request.url.path
        response = login_page(
            request,
            status=status,
            error=message if request.method != "GET" else None,
            next_url=form.get("next") or request.query_params.get("next") or here,
            username=form.get("username", ""),
        )
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response
    actor = getattr(request.state, "principal", None)
    return render(
        request,
        "error.html",
        actor=actor,
        status=status,
        headers=headers,
        message=message,
        status_code=status,
    )
