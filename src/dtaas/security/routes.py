"""HTTP routes of the security domain: sign-in, the caller, API tokens and users."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from dtaas.db import SessionDep
from dtaas.security import service
from dtaas.security.deps import (
    SESSION_COOKIE,
    CurrentActor,
    SettingsDep,
    UserManager,
    cookie_signer,
)
from dtaas.security.models import ApiToken, User
from dtaas.security.permissions import ROLE_PERMISSIONS
from dtaas.security.schemas import (
    LoginRequest,
    Me,
    PasswordChange,
    PasswordTokenRequest,
    SessionRead,
    TokenCreate,
    TokenCreated,
    TokenRead,
    UserCreate,
    UserRead,
    UserUpdate,
)

router = APIRouter(tags=["security"])


def set_session_cookie(
    *, request: Request, response: Response, settings: SettingsDep, secret: str
) -> None:
    """Put the signed session secret into an HttpOnly, SameSite cookie."""
    response.set_cookie(
        SESSION_COOKIE,
        cookie_signer(request).sign(secret).decode(),
        max_age=settings.session_max_age_seconds,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        path="/",
    )


def _token_created(created: service.NewToken) -> TokenCreated:
    return TokenCreated(
        **TokenRead.model_validate(created.record).model_dump(), token=created.token
    )


@router.post("/auth/login", response_model=SessionRead)
def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
) -> SessionRead:
    """Sign in with a password; sets the session cookie and returns the CSRF token."""
    user = service.check_password(
        session=session, settings=settings, username=body.username, password=body.password
    )
    started = service.start_session(session=session, settings=settings, user=user)
    set_session_cookie(request=request, response=response, settings=settings, secret=started.secret)
    return SessionRead(user=UserRead.model_validate(user), csrf_token=started.record.csrf_token)


@router.post("/auth/token", response_model=TokenCreated, status_code=201)
def create_token_with_password(
    body: PasswordTokenRequest, session: SessionDep, settings: SettingsDep
) -> TokenCreated:
    """Trade a username and password for a new API token (used by `dtaas login`)."""
    created = service.create_token_with_password(
        session=session,
        settings=settings,
        username=body.username,
        password=body.password,
        name=body.token_name,
        expires_in_days=body.expires_in_days,
    )
    return _token_created(created)


@router.post("/auth/logout", status_code=204)
def logout(response: Response, session: SessionDep, actor: CurrentActor) -> Response:
    """End the current browser session."""
    service.end_session(session=session, actor=actor)
    response.status_code = 204
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=Me)
def read_me(session: SessionDep, actor: CurrentActor) -> Me:
    """The caller, their organisation and what their role allows."""
    user = service.get_user(session=session, actor=actor, username=actor.username)
    return Me(
        user=UserRead.model_validate(user),
        organisation=user.organisation.name,
        permissions=sorted(p.value for p in ROLE_PERMISSIONS[actor.role]),
        auth=actor.auth,
    )


@router.post("/me/password", status_code=204)
def change_password(body: PasswordChange, session: SessionDep, actor: CurrentActor) -> None:
    """Change your own password; your other sessions end."""
    service.change_password(
        session=session,
        actor=actor,
        current_password=body.current_password,
        new_password=body.new_password,
    )


@router.get("/tokens", response_model=list[TokenRead])
def list_tokens(session: SessionDep, actor: CurrentActor) -> list[ApiToken]:
    """Your API tokens, revoked ones included."""
    return service.list_tokens(session=session, actor=actor)


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(
    body: TokenCreate, session: SessionDep, settings: SettingsDep, actor: CurrentActor
) -> TokenCreated:
    """Create an API token; the token is in this response only."""
    created = service.create_token(
        session=session,
        settings=settings,
        actor=actor,
        name=body.name,
        expires_in_days=body.expires_in_days,
    )
    return _token_created(created)


@router.delete("/tokens/{token_id}", response_model=TokenRead)
def revoke_token(token_id: int, session: SessionDep, actor: CurrentActor) -> ApiToken:
    """Revoke a token; it stops working at once."""
    return service.revoke_token(session=session, actor=actor, token_id=token_id)


@router.get("/users", response_model=list[UserRead])
def list_users(session: SessionDep, actor: UserManager) -> list[User]:
    """All users of the organisation (admins)."""
    return service.list_users(session=session, actor=actor)


@router.post("/users", response_model=UserRead, status_code=201)
def create_user(
    body: UserCreate, session: SessionDep, settings: SettingsDep, actor: UserManager
) -> User:
    """Create a user (admins)."""
    return service.create_user(
        session=session,
        settings=settings,
        actor=actor,
        username=body.username,
        password=body.password,
        role=body.role,
        full_name=body.full_name,
    )


@router.get("/users/{username}", response_model=UserRead)
def read_user(username: str, session: SessionDep, actor: CurrentActor) -> User:
    """A user: yourself, or anyone for admins."""
    return service.get_user(session=session, actor=actor, username=username)


@router.patch("/users/{username}", response_model=UserRead)
def update_user(username: str, body: UserUpdate, session: SessionDep, actor: UserManager) -> User:
    """Change a user's role or name, or disable or enable them (admins)."""
    return service.update_user(
        session=session,
        actor=actor,
        username=username,
        role=body.role,
        full_name=body.full_name,
        is_active=body.is_active,
    )
