"""The security service: passwords, demo seeding, expiry, rate limits, permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dtaas.db import utcnow
from dtaas.errors import InvalidInput, NotAuthenticated, PermissionDenied, TooManyRequests
from dtaas.security import service as security
from dtaas.security.models import ApiToken, LoginFailure, Role, User, UserSession
from dtaas.security.permissions import Permission, require
from tests.factories import PASSWORD, make_principal


def test_demo_seed_creates_three_users_with_hashed_passwords_once(session, settings):
    passwords = security.seed_demo(session=session, settings=settings)
    assert sorted(passwords) == ["admin", "alice", "bob"]
    for username, password in passwords.items():
        user = security.find_user(session=session, username=username)
        assert user is not None
        assert user.password_hash.startswith("$argon2id$")
        assert password not in user.password_hash
        checked = security.check_password(
            session=session, settings=settings, username=username, password=password
        )
        assert checked.id == user.id
    assert security.find_user(session=session, username="admin").role is Role.ADMIN
    assert security.seed_demo(session=session, settings=settings) == {}


def test_expired_token_is_refused(session, settings, alice):
    created = security.create_token(
        session=session, settings=settings, actor=make_principal(alice), name="old"
    )
    created.record.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    with pytest.raises(NotAuthenticated, match="expired"):
        security.principal_from_token(session=session, token=created.token)


def test_expired_session_is_refused(session, settings, alice):
    started = security.start_session(session=session, settings=settings, user=alice)
    started.record.expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    with pytest.raises(NotAuthenticated, match="session has ended"):
        security.principal_from_session(session=session, secret=started.secret)


def test_only_hashes_of_tokens_and_sessions_are_stored(session, settings, alice):
    created = security.create_token(
        session=session, settings=settings, actor=make_principal(alice), name="t"
    )
    started = security.start_session(session=session, settings=settings, user=alice)
    stored_token = session.get(ApiToken, created.record.id)
    stored_session = session.get(UserSession, started.record.id)
    assert created.token not in (stored_token.token_hash, stored_token.prefix)
    assert stored_session.secret_hash != started.secret


def test_failures_older_than_the_window_do_not_count(session, settings, alice):
    old = utcnow() - timedelta(seconds=settings.login_window_seconds + 5)
    session.add_all([LoginFailure(username="alice", failed_at=old) for _ in range(10)])
    session.commit()
    user = security.check_password(
        session=session, settings=settings, username="alice", password=PASSWORD
    )
    assert user.username == "alice"


def test_rate_limit_retry_after_counts_from_the_oldest_failure_in_the_window(
    session, settings, alice
):
    now = utcnow()
    session.add_all(
        [LoginFailure(username="alice", failed_at=now - timedelta(seconds=50)) for _ in range(5)]
    )
    session.commit()
    with pytest.raises(TooManyRequests) as caught:
        security.check_password(
            session=session, settings=settings, username="alice", password=PASSWORD
        )
    assert 9 <= caught.value.retry_after <= 11


def test_successful_sign_in_clears_earlier_failures(session, settings, alice):
    for _ in range(4):
        with pytest.raises(NotAuthenticated):
            security.check_password(
                session=session, settings=settings, username="alice", password="wrong"
            )
    security.check_password(session=session, settings=settings, username="alice", password=PASSWORD)
    session.commit()
    assert session.query(LoginFailure).filter_by(username="alice").count() == 0


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.VIEWER, {Permission.READ}),
        (Role.USER, {Permission.READ, Permission.WRITE, Permission.OPERATE}),
        (Role.ADMIN, set(Permission)),
    ],
)
def test_role_permission_matrix(role, allowed):
    principal = make_principal(User(id=1, username="x", role=role))
    for permission in Permission:
        if permission in allowed:
            require(principal, permission)
        else:
            with pytest.raises(PermissionDenied):
                require(principal, permission)


def test_password_containing_the_username_is_refused(session, settings, admin_principal):
    with pytest.raises(InvalidInput, match="must not contain the username"):
        security.create_user(
            session=session,
            settings=settings,
            actor=admin_principal,
            username="dave",
            password="dave-is-the-best",
        )
