"""Who is who on the site's MQTT broker: account names, passwords and topic prefixes.

As for PostgreSQL (``isolation.py``), nothing is stored: an instance's account is
``dtaas_<site>_i<id>`` and its password an HMAC of the site's secret, the instance and its
owner, so the platform can hand it out again at every job and check it at every connect.
``<site>`` tells sites sharing one broker apart. The embedded broker's own platform account
(``dtaas_<site>_platform``) is derived the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import quote, urlsplit, urlunsplit

from dtaas.config import Settings

ROOT = "dtaas/"  # every topic the platform and its instances use is below it


def _site(settings: Settings) -> str:
    return hashlib.sha256(
        f"{settings.signing_key()}:{settings.data_dir.resolve()}".encode()
    ).hexdigest()[:8]


def _derived(settings: Settings, purpose: str) -> str:
    key = settings.signing_key().encode()
    return hmac.new(key, purpose.encode(), hashlib.sha256).hexdigest()


def instance_username(settings: Settings, instance_id: int) -> str:
    """The MQTT account of an instance's jobs."""
    return f"dtaas_{_site(settings)}_i{instance_id}"


def instance_password(settings: Settings, instance_id: int, owner: str) -> str:
    # The owner is part of it: an instance id that SQLite hands out again after a delete
    # gives another user's new instance another password.
    return _derived(settings, f"mqtt-instance:{instance_id}:{owner}")


def instance_id_of(settings: Settings, username: str) -> int | None:
    """The instance whose account ``username`` is, or None if it is no instance's."""
    match = re.fullmatch(rf"dtaas_{_site(settings)}_i([1-9][0-9]{{0,17}})", username)
    return int(match.group(1)) if match else None


def platform_username(settings: Settings) -> str:
    """The embedded broker's account for the platform itself (telemetry, health checks)."""
    return f"dtaas_{_site(settings)}_platform"


def platform_password(settings: Settings) -> str:
    return _derived(settings, "mqtt-platform")


def topic_prefix(owner: str, instance_id: int) -> str:
    """The topics an instance may use: ``dtaas/<owner>/<instance>/``."""
    return f"{ROOT}{owner}/{instance_id}/"


def is_below(topic: str, prefix: str) -> bool:
    """Whether a topic or subscription filter stays inside ``prefix`` (which ends in ``/``).

    Wildcards count only after the prefix: ``dtaas/alice/1/#`` is inside
    ``dtaas/alice/1/``, ``dtaas/alice/+/#`` and ``#`` are not. The prefix's own level
    (``dtaas/alice/1``) is inside, as ``dtaas/alice/1/#`` matches it too.
    """
    return topic.startswith(prefix) or topic == prefix.removesuffix("/")


def with_credentials(url: str, username: str, password: str) -> str:
    """``url``'s scheme, host and port with these credentials instead of its own."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{quote(username, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, "", "", ""))
