"""The security tests hash with the platform's real argon2 parameters."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fast_password_hashing() -> None:
    """Overrides the suite's cheap hashing: here the real parameters are under test."""
