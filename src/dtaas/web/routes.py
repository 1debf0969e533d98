"""The pages: sign-in, home, account (password, API tokens) and user administration."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dtaas.accounting import service as accounting
from dtaas.accounting.budget import format_bytes
from dtaas.db import SessionDep
from dtaas.errors import CsrfFailed
from dtaas.security import service as security
from dtaas.security.deps import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    CurrentActor,
    SettingsDep,
    UserManager,
)
from dtaas.security.models import Role
from dtaas.security.routes import set_session_cookie
from dtaas.web.pages import login_page, render, safe_next

router = APIRouter(include_in_schema=False)


@router.get("/login", response_class=HTMLResponse)
def show_login(request: Request, next: str = "/") -> HTMLResponse:
    """The sign-in form."""
    return login_page(request, next_url=next)


@router.post("/login")
def submit_login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the password, start a session and go where the user was heading."""
    request.state.login_form = {"username": username, "next": next}
    if not security.csrf_matches(expected=request.cookies.get(LOGIN_CSRF_COOKIE), given=csrf_token):
        raise CsrfFailed("The sign-in form expired; reload the page and try again.")
    user = security.check_password(
        session=session, settings=settings, username=username, password=password
    )
    started = security.start_session(session=session, settings=settings, user=user)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(request=request, response=response, settings=settings, secret=started.secret)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def submit_logout(session: SessionDep, actor: CurrentActor) -> Response:
    """Sign out and return to the sign-in page."""
    security.end_session(session=session, actor=actor)
    response = RedirectResponse("/login", status_code=303)
    response.headers["HX-Redirect"] = "/login"
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, actor: CurrentActor) -> HTMLResponse:
    """The start page."""
    user = security.get_user(session=session, actor=actor, username=actor.username)
    return render(request, "home.html", actor=actor, user=user)


@router.get("/account", response_class=HTMLResponse)
def account(
    request: Request, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> HTMLResponse:
    """Your profile, storage, password and API tokens."""
    user = security.get_user(session=session, actor=actor, username=actor.username)
    tokens = security.list_tokens(session=session, actor=actor)
    storage = accounting.get_storage(session=session, settings=settings, actor=actor)
    return render(
        request,
        "account.html",
        actor=actor,
        user=user,
        tokens=tokens,
        storage=storage,
        format_bytes=format_bytes,
    )


@router.post("/account/password", response_class=HTMLResponse)
def change_password(
    request: Request,
    session: SessionDep,
    actor: CurrentActor,
    current_password: Annotated[str, Form(max_length=1024)],
    new_password: Annotated[str, Form(max_length=1024)],
) -> HTMLResponse:
    """Change your password (htmx fragment)."""
    security.change_password(
        session=session,
        actor=actor,
        current_password=current_password,
        new_password=new_password,
    )
    return render(request, "_notice.html", actor=actor, message="Your password was changed.")


@router.post("/account/tokens", response_class=HTMLResponse)
def create_token(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: CurrentActor,
    name: Annotated[str, Form(min_length=1, max_length=100)],
    expires_in_days: Annotated[int, Form(ge=1, le=3650)] = 90,
) -> HTMLResponse:
    """Create a token and show it once (htmx fragment)."""
    created = security.create_token(
        session=session,
        settings=settings,
        actor=actor,
        name=name.strip(),
        expires_in_days=expires_in_days,
    )
    tokens = security.list_tokens(session=session, actor=actor)
    return render(request, "_tokens.html", actor=actor, tokens=tokens, created=created)


@router.post("/account/tokens/{token_id}/revoke", response_class=HTMLResponse)
def revoke_token(
    request: Request, token_id: int, session: SessionDep, actor: CurrentActor
) -> HTMLResponse:
    """Revoke a token (htmx fragment)."""
    security.revoke_token(session=session, actor=actor, token_id=token_id)
    tokens = security.list_tokens(session=session, actor=actor)
    return render(request, "_tokens.html", actor=actor, tokens=tokens, created=None)


@router.get("/admin/users", response_class=HTMLResponse)
def users(request: Request, session: SessionDep, actor: UserManager) -> HTMLResponse:
    """User administration."""
    return render(
        request,
        "users.html",
        actor=actor,
        users=security.list_users(session=session, actor=actor),
        roles=list(Role),
    )


@router.post("/admin/users", response_class=HTMLResponse)
def create_user(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    actor: UserManager,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    role: Annotated[Role, Form()] = Role.USER,
    full_name: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    """Create a user (htmx fragment: the refreshed table)."""
    security.create_user(
        session=session,
        settings=settings,
        actor=actor,
        username=username.strip().lower(),
        password=password,
        role=role,
        full_name=full_name.strip(),
    )
    return render(
        request,
        "_users_table.html",
        actor=actor,
        users=security.list_users(session=session, actor=actor),
    )


@router.post("/admin/users/{username}/active", response_class=HTMLResponse)
def set_user_active(
    request: Request,
    username: str,
    session: SessionDep,
    actor: UserManager,
    active: Annotated[bool, Form()],
) -> HTMLResponse:
    """Disable or enable a user (htmx fragment: the refreshed table)."""
    security.update_user(session=session, actor=actor, username=username, is_active=active)
    return render(
        request,
        "_users_table.html",
        actor=actor,
        users=security.list_users(session=session, actor=actor),
    )
