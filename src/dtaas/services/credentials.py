"""Passwords of registered services at rest: Fernet, keyed by the site's secret via HKDF."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dtaas.config import Settings

UNDECRYPTABLE = (
    "the stored password cannot be decrypted (the site's secret key changed); "
    "an admin must set the password again"
)


def _fernet(settings: Settings) -> Fernet:
    """The cipher of stored passwords, keyed by the site's secret through HKDF."""
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"dtaas.services",
        info=b"registered service credentials",
    ).derive(settings.signing_key().encode())
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt_password(settings: Settings, password: str) -> str:
    """A Fernet token of ``password`` for the database."""
    return _fernet(settings).encrypt(password.encode()).decode("ascii")


def decrypt_password(settings: Settings, token: str) -> str | None:
    """The password in a stored token; None if the site's key has changed since."""
    try:
        return _fernet(settings).decrypt(token.encode("ascii")).decode()
    except InvalidToken:
        return None
