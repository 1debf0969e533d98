"""Users, passwords, sessions and API tokens: the logic of the security domain."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.db import utcnow
from dtaas.errors import Conflict, InvalidInput, NotAuthenticated, NotFound, TooManyRequests
from dtaas.library import service as library
from dtaas.security.models import ApiToken, LoginFailure, Organisation, Role, User, UserSession
from dtaas.security.permissions import Permission, Principal, require
from dtaas.security.schemas import USERNAME_PATTERN

log = logging.getLogger(__name__)

TOKEN_PREFIX = "dtaas_"
# Names that clash with library folders or URL prefixes of the platform.
RESERVED_USERNAMES = frozenset({"common", "template", "api", "static", "services", "user"})
DEMO_USERS: tuple[tuple[str, Role, str], ...] = (
    ("admin", Role.ADMIN, "Demo Administrator"),
    ("alice", Role.USER, "Alice Example"),
    ("bob", Role.USER, "Bob Example"),
)

_hasher = PasswordHasher()
# Verified against unknown usernames so timing does not reveal which accounts exist.
_DUMMY_HASH = _hasher.hash("not a real password")


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_new_password(*, username: str, password: str) -> None:
    """Refuse passwords that are trivially guessable.

    Raises: InvalidInput naming the rule that failed.
    """
    if len(password) < 10:
        raise InvalidInput(
            "The password is too short: use at least 10 characters.", loc=["password"]
        )
    if username.lower() in password.lower():
        raise InvalidInput("The password must not contain the username.", loc=["password"])


# --- organisation and users -------------------------------------------------------------


def ensure_organisation(*, session: Session, settings: Settings) -> Organisation:
    """The one organisation of this installation, created on first use."""
    organisation = session.scalars(select(Organisation).order_by(Organisation.id)).first()
    if organisation is None:
        organisation = Organisation(name=settings.organisation)
        session.add(organisation)
        session.flush()
    return organisation


def _insert_user(
    *,
    session: Session,
    settings: Settings,
    organisation: Organisation,
    username: str,
    password: str,
    role: Role,
    full_name: str,
) -> User:
    if not re.fullmatch(USERNAME_PATTERN, username):
        raise InvalidInput(
            f"Username {username!r} is not allowed: use 2-32 lowercase letters, digits, "
            "'-' or '_', starting with a letter.",
            loc=["username"],
        )
    if username in RESERVED_USERNAMES:
        raise InvalidInput(
            f"Username {username!r} is reserved by the platform; choose another.",
            loc=["username"],
        )
    check_new_password(username=username, password=password)
    if find_user(session=session, username=username) is not None:
        raise Conflict(f"A user named {username!r} already exists.", loc=["username"])
    user = User(
        organisation_id=organisation.id,
        username=username,
        full_name=full_name,
        role=role,
        password_hash=hash_password(password),
        is_active=True,
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent request took the name
        raise Conflict(f"A user named {username!r} already exists.", loc=["username"]) from exc
    # Folders first: if the commit then fails, an empty library is harmless and reused.
    library.ensure_library(settings=settings, username=username)
    return user


def create_user(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    username: str,
    password: str,
    role: Role = Role.USER,
    full_name: str = "",
) -> User:
    """Create a user in the organisation.

    Raises: PermissionDenied unless the actor manages users; InvalidInput; Conflict.
    """
    require(actor, Permission.MANAGE_USERS)
    organisation = ensure_organisation(session=session, settings=settings)
    user = _insert_user(
        session=session,
        settings=settings,
        organisation=organisation,
        username=username,
        password=password,
        role=role,
        full_name=full_name,
    )
    session.commit()
    log.info("user created username=%s role=%s actor=%s", username, role.value, actor.username)
    return user


def bootstrap_admin(*, session: Session, settings: Settings, username: str, password: str) -> User:
    """Create an administrator without an actor, for installing a site from the shell.

    Raises: InvalidInput; Conflict if the name is taken.
    """
    organisation = ensure_organisation(session=session, settings=settings)
    user = _insert_user(
        session=session,
        settings=settings,
        organisation=organisation,
        username=username,
        password=password,
        role=Role.ADMIN,
        full_name="",
    )
    session.commit()
    log.info("administrator created from the shell username=%s", username)
    return user


def seed_demo(*, session: Session, settings: Settings) -> dict[str, str]:
    """Create the demo users on an empty installation; returns their one-time passwords."""
    organisation = ensure_organisation(session=session, settings=settings)
    if session.scalar(select(func.count()).select_from(User)):
        session.commit()
        return {}
    passwords: dict[str, str] = {}
    for username, role, full_name in DEMO_USERS:
        password = secrets.token_urlsafe(12)
        _insert_user(
            session=session,
            settings=settings,
            organisation=organisation,
            username=username,
            password=password,
            role=role,
            full_name=full_name,
        )
        passwords[username] = password
    session.commit()
    log.info("demo users created usernames=%s", ",".join(passwords))
    return passwords


def find_user(*, session: Session, username: str) -> User | None:
    """The user with this name, or None."""
    return session.scalars(select(User).where(User.username == username.lower())).first()


def get_user(*, session: Session, actor: Principal, username: str) -> User:
    """A user by name, for an actor allowed to see users.

    Raises: PermissionDenied; NotFound.
    """
    if username.lower() != actor.username:
        require(actor, Permission.MANAGE_USERS)
    user = find_user(session=session, username=username)
    if user is None:
        raise NotFound(f"There is no user named {username!r}.", loc=["username"])
    return user


def all_users(*, session: Session) -> list[User]:
    """Every user, for the platform's own start-up work (no actor, no permission check)."""
    return list(session.scalars(select(User).order_by(User.username)))


def list_users(*, session: Session, actor: Principal) -> list[User]:
    """All users of the organisation, by name.

    Raises: PermissionDenied unless the actor manages users.
    """
    require(actor, Permission.MANAGE_USERS)
    return list(session.scalars(select(User).order_by(User.username)))


def update_user(
    *,
    session: Session,
    actor: Principal,
    username: str,
    role: Role | None = None,
    full_name: str | None = None,
    is_active: bool | None = None,
) -> User:
    """Change a user's role, name or whether they may sign in.

    Disabling a user ends their sessions and revokes their tokens at once.

    Raises: PermissionDenied; NotFound; Conflict when admins would lock themselves out.
    """
    require(actor, Permission.MANAGE_USERS)
    user = get_user(session=session, actor=actor, username=username)
    if user.id == actor.user_id and (is_active is False or role not in (None, Role.ADMIN)):
        raise Conflict(
            "You cannot disable yourself or drop your own admin role; ask another administrator.",
            loc=["username"],
        )
    if role is not None:
        user.role = role
    if full_name is not None:
        user.full_name = full_name
    if is_active is not None and is_active != user.is_active:
        user.is_active = is_active
        user.disabled_at = None if is_active else utcnow()
        if not is_active:
            _end_all_access(session=session, user_id=user.id)
    session.commit()
    log.info(
        "user updated username=%s role=%s active=%s actor=%s",
        user.username,
        user.role.value,
        user.is_active,
        actor.username,
    )
    return user


def _end_all_access(*, session: Session, user_id: int) -> None:
    session.execute(delete(UserSession).where(UserSession.user_id == user_id))
    session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def change_password(
    *, session: Session, actor: Principal, current_password: str, new_password: str
) -> None:
    """Change the actor's own password; their other sessions end.

    Raises: NotAuthenticated if the current password is wrong; InvalidInput.
    """
    user = session.get(User, actor.user_id)
    if user is None:
        raise NotAuthenticated("Your account no longer exists; sign in again.")
    if not _verify(user.password_hash, current_password):
        raise InvalidInput("The current password is wrong.", loc=["current_password"])
    check_new_password(username=user.username, password=new_password)
    user.password_hash = hash_password(new_password)
    others = delete(UserSession).where(UserSession.user_id == user.id)
    if actor.auth == "session":
        others = others.where(UserSession.id != actor.credential_id)
    session.execute(others)
    session.commit()
    log.info("password changed username=%s", user.username)


# --- signing in ---------------------------------------------------------------------------


def check_password(*, session: Session, settings: Settings, username: str, password: str) -> User:
    """The user whose password this is, within the failed-login rate limit.

    Raises: TooManyRequests after too many failures in the window; NotAuthenticated.
    """
    name = username.strip().lower()[:64]
    now = utcnow()
    window_start = now - timedelta(seconds=settings.login_window_seconds)
    failures = list(
        session.scalars(
            select(LoginFailure.failed_at)
            .where(LoginFailure.username == name, LoginFailure.failed_at > window_start)
            .order_by(LoginFailure.failed_at)
        )
    )
    if len(failures) >= settings.login_max_failures:
        oldest = failures[-settings.login_max_failures]
        retry_after = int((oldest - window_start).total_seconds()) + 1
        raise TooManyRequests(
            f"Too many failed sign-ins for {name!r}; try again in {retry_after} seconds.",
            retry_after=retry_after,
        )
    user = find_user(session=session, username=name)
    valid = _verify(user.password_hash if user else _DUMMY_HASH, password)
    if user is None or not valid:
        session.add(LoginFailure(username=name, failed_at=now))
        # Old rows are no longer needed by any window.
        session.execute(delete(LoginFailure).where(LoginFailure.failed_at <= window_start))
        session.commit()
        log.info("sign-in failed username=%s", name)
        raise NotAuthenticated("Wrong username or password.", loc=["password"])
    if not user.is_active:
        raise NotAuthenticated(
            "This account is disabled; ask an administrator to enable it.", loc=["username"]
        )
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.execute(delete(LoginFailure).where(LoginFailure.username == name))
    return user


@dataclass(frozen=True, slots=True)
class NewSession:
    """A started session: ``secret`` goes into the signed cookie and nowhere else."""

    secret: str
    record: UserSession


def start_session(*, session: Session, settings: Settings, user: User) -> NewSession:
    """Start a browser session for a user whose password was just checked."""
    secret = secrets.token_urlsafe(32)
    record = UserSession(
        user_id=user.id,
        secret_hash=_sha256(secret),
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + timedelta(seconds=settings.session_max_age_seconds),
    )
    session.add(record)
    session.execute(delete(UserSession).where(UserSession.expires_at <= utcnow()))
    session.commit()
    log.info("session started username=%s session_id=%s", user.username, record.id)
    return NewSession(secret=secret, record=record)


def end_session(*, session: Session, actor: Principal) -> None:
    """Sign out: the session, or the token the request came with, stops working at once."""
    if actor.auth == "session":
        session.execute(delete(UserSession).where(UserSession.id == actor.credential_id))
        log.info("session ended username=%s", actor.username)
    else:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == actor.credential_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        log.info(
            "token revoked by sign-out username=%s token_id=%s", actor.username, actor.credential_id
        )
    session.commit()


def principal_from_session(*, session: Session, secret: str) -> Principal:
    """The caller behind a session cookie's secret.

    Raises: NotAuthenticated if the session is unknown, expired or its user disabled.
    """
    record = session.scalars(
        select(UserSession).where(UserSession.secret_hash == _sha256(secret))
    ).first()
    if record is None or record.expires_at <= utcnow():
        raise NotAuthenticated("Your session has ended; sign in again.")
    if not record.user.is_active:
        raise NotAuthenticated("This account is disabled; ask an administrator to enable it.")
    session.commit()  # release SQLite's write lock before long responses (see tokens)
    return Principal(
        user_id=record.user.id,
        username=record.user.username,
        role=record.user.role,
        auth="session",
        credential_id=record.id,
        csrf_token=record.csrf_token,
    )


def principal_from_token(*, session: Session, token: str) -> Principal:
    """The caller behind a bearer token.

    Raises: NotAuthenticated if the token is unknown, expired, revoked or its user disabled.
    """
    record = session.scalars(select(ApiToken).where(ApiToken.token_hash == _sha256(token))).first()
    now = utcnow()
    if record is None:
        raise NotAuthenticated("The API token is not valid; create a new one.")
    if record.revoked_at is not None:
        raise NotAuthenticated("The API token was revoked; create a new one.")
    if record.expires_at <= now:
        raise NotAuthenticated("The API token has expired; create a new one.")
    if not record.user.is_active:
        raise NotAuthenticated("This account is disabled; ask an administrator to enable it.")
    # Write last use at most once a minute: a busy client should not write on every call.
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
        record.last_used_at = now
    # Always end the transaction: under BEGIN IMMEDIATE even this read holds SQLite's write
    # lock until the request's session closes, which for a stream is its very end.
    session.commit()
    return Principal(
        user_id=record.user.id,
        username=record.user.username,
        role=record.user.role,
        auth="token",
        credential_id=record.id,
    )


def csrf_matches(*, expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of CSRF tokens."""
    return bool(expected and given and hmac.compare_digest(expected, given))


# --- API tokens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewToken:
    """A created token: ``token`` is the only copy of the secret."""

    token: str
    record: ApiToken


def _issue_token(
    *, session: Session, settings: Settings, user_id: int, name: str, expires_in_days: int | None
) -> NewToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    days = expires_in_days or settings.token_default_days
    now = utcnow()
    record = ApiToken(
        user_id=user_id,
        name=name,
        token_hash=_sha256(token),
        prefix=token[: len(TOKEN_PREFIX) + 6],
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    session.add(record)
    session.commit()
    return NewToken(token=token, record=record)


def create_token(
    *,
    session: Session,
    settings: Settings,
    actor: Principal,
    name: str,
    expires_in_days: int | None = None,
) -> NewToken:
    """Create a personal API token for the actor; it acts with the actor's role."""
    created = _issue_token(
        session=session,
        settings=settings,
        user_id=actor.user_id,
        name=name,
        expires_in_days=expires_in_days,
    )
    log.info("token created username=%s token_id=%s", actor.username, created.record.id)
    return created


def create_token_with_password(
    *,
    session: Session,
    settings: Settings,
    username: str,
    password: str,
    name: str,
    expires_in_days: int | None = None,
) -> NewToken:
    """Trade a username and password for a new API token (the CLI's sign-in).

    Raises: TooManyRequests; NotAuthenticated.
    """
    user = check_password(session=session, settings=settings, username=username, password=password)
    created = _issue_token(
        session=session,
        settings=settings,
        user_id=user.id,
        name=name,
        expires_in_days=expires_in_days,
    )
    log.info("token created by password username=%s token_id=%s", user.username, created.record.id)
    return created


def list_tokens(*, session: Session, actor: Principal) -> list[ApiToken]:
    """The actor's own tokens, newest first, revoked ones included."""
    return list(
        session.scalars(
            select(ApiToken)
            .where(ApiToken.user_id == actor.user_id)
            .order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
        )
    )


def revoke_token(*, session: Session, actor: Principal, token_id: int) -> ApiToken:
    """Revoke one of the actor's tokens (admins: anyone's); it stops working at once.

    Raises: NotFound; Conflict if it is already revoked.
    """
    record = session.get(ApiToken, token_id)
    if record is None or (
        record.user_id != actor.user_id and not actor.has(Permission.MANAGE_USERS)
    ):
        raise NotFound(f"There is no token with id {token_id}.", loc=["token_id"])
    if record.revoked_at is not None:
        raise Conflict(f"Token {token_id} is already revoked.", loc=["token_id"])
    record.revoked_at = utcnow()
    session.commit()
    log.info("token revoked token_id=%s actor=%s", token_id, actor.username)
    return record
