"""FastAPI dependencies of the security domain: who is calling, and may they."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from itsdangerous import BadSignature, TimestampSigner

from dtaas.config import Settings
from dtaas.db import SessionDep
from dtaas.errors import CsrfFailed, NotAuthenticated
from dtaas.security import service
from dtaas.security.permissions import Permission, Principal
from dtaas.security.permissions import require as require_permission

SESSION_COOKIE = "dtaas_session"
LOGIN_CSRF_COOKIE = "dtaas_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def cookie_signer(request: Request) -> TimestampSigner:
    """The signer of session cookies, keyed by the site's secret."""
    signer: TimestampSigner = request.app.state.cookie_signer
    return signer


def _identify(request: Request, session: SessionDep, settings: SettingsDep) -> Principal:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated(
                "The Authorization header must be 'Bearer <token>' with an API token."
            )
        return service.principal_from_token(session=session, token=token.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        try:
            secret = cookie_signer(request).unsign(cookie, max_age=settings.session_max_age_seconds)
        except BadSignature as exc:
            raise NotAuthenticated("Your session cookie is not valid; sign in again.") from exc
        return service.principal_from_session(session=session, secret=secret.decode())
    raise NotAuthenticated(
        "Sign in first, or send an API token as 'Authorization: Bearer <token>'."
    )


async def authenticate(
    request: Request, principal: Annotated[Principal, Depends(_identify)]
) -> Principal:
    """The caller, with CSRF checked for unsafe requests that rely on the cookie.

    Raises: NotAuthenticated; CsrfFailed.
    """
    if principal.auth == "session" and request.method not in SAFE_METHODS:
        given = request.headers.get(CSRF_HEADER)
        content_type = request.headers.get("content-type", "")
        # Plain HTML forms send the token as a field; only small urlencoded bodies are
        # read here, uploads must use the header so they can stream.
        if given is None and content_type.startswith("application/x-www-form-urlencoded"):
            value = (await request.form()).get(CSRF_FIELD)
            given = value if isinstance(value, str) else None
        if not service.csrf_matches(expected=principal.csrf_token, given=given):
            raise CsrfFailed(
                f"This request needs the CSRF token of your session in the {CSRF_HEADER} "
                "header; reload the page and try again."
            )
    request.state.principal = principal
    return principal


def require(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency that lets a request through only with ``permission``."""

    def dependency(actor: Annotated[Principal, Depends(authenticate)]) -> Principal:
        require_permission(actor, permission)
        return actor

    dependency.__name__ = f"require_{permission.value}"
    return dependency


CurrentActor = Annotated[Principal, Depends(require(Permission.READ))]
Writer = Annotated[Principal, Depends(require(Permission.WRITE))]
UserManager = Annotated[Principal, Depends(require(Permission.MANAGE_USERS))]
MetricsReader = Annotated[Principal, Depends(require(Permission.VIEW_METRICS))]
