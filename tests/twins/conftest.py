"""Fixtures of the twins tests: cheap password hashing and a second user."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.security import service as security
from dtaas.security.models import User
from tests.factories import make_user


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash passwords with argon2's cheapest parameters; tokens authenticate every request."""
    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(security, "_hasher", cheap)


@pytest.fixture
def bob(session: Session, settings: Settings) -> User:
    return make_user(session, settings, username="bob")
