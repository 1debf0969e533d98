"""Per-instance RabbitMQ: a virtual host and a user of its own for each instance that asks.

An instance whose manifest lists ``amqp`` gets a vhost and a user both named
``dtaas_<site>_i<id>`` (the name of its PostgreSQL role), made through RabbitMQ's management
HTTP API (``amqp_management_url``). The user may configure, write and read everything in
that vhost and has no permission anywhere else, so one instance's jobs can neither see nor
consume another's queues and messages. The password is derived from the site's secret
(nothing to store). When the instance is terminated its user is deleted: it can no longer
log in, and RabbitMQ closes its open connections; the vhost, with its queues and messages,
stays until the instance is cleaned or deleted. The vhost's description names the owner, so
a vhost left by a deleted instance whose id is handed out again is not inherited.

Without ``amqp_management_url`` nothing is isolated: every job gets ``amqp_url`` and its
account, and docs/services.md says so. With it, a job never gets the platform's account: if
the instance's account cannot be made, the job fails saying why.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from dtaas.config import Settings
from dtaas.errors import BackendUnavailable
from dtaas.services import isolation

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 5.0
# The instance's user may do anything inside its own vhost (configure, write, read).
ALL_IN_ITS_VHOST = {"configure": ".*", "write": ".*", "read": ".*"}


def is_isolated(settings: Settings) -> bool:
    """Whether instances get accounts of their own: a broker and its management API."""
    return bool(settings.amqp_url and settings.amqp_management_url)


def account_name(settings: Settings, instance_id: int) -> str:
    """The name of the instance's user and vhost: that of its PostgreSQL role."""
    return isolation.role_name(settings, instance_id)


def _password(settings: Settings, instance_id: int) -> str:
    key = settings.signing_key().encode()
    return hmac.new(key, f"amqp-instance:{instance_id}".encode(), hashlib.sha256).hexdigest()


def instance_url(settings: Settings, instance_id: int) -> str:
    """The URL the instance's jobs connect with: its own user and vhost on the same broker."""
    parts = urlsplit(settings.amqp_url or "")
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    name = account_name(settings, instance_id)
    netloc = f"{name}:{quote(_password(settings, instance_id), safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    path = "/" + quote(name, safe="")
    return urlunsplit((parts.scheme or "amqp", netloc, path, parts.query, ""))


def _management(settings: Settings) -> tuple[str, tuple[str, str] | None]:
    """The management API's address without credentials (safe to show), and the credentials."""
    parts = urlsplit(settings.amqp_management_url or "")
    credentials = None
    if parts.username is not None:
        credentials = (unquote(parts.username), unquote(parts.password or ""))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")), credentials


def _failure(address: str, exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        reason = f"no answer within {TIMEOUT_SECONDS:g} s"
    elif isinstance(exc, httpx.ConnectError):
        reason = f"cannot connect: {exc}"
    else:
        reason = str(exc) or type(exc).__name__
    return (
        f"RabbitMQ's management API at {address} did not answer ({reason}); check "
        "DTAAS_AMQP_MANAGEMENT_URL and that the broker's rabbitmq_management plugin is enabled"
    )


def _refusal(address: str, request: str, response: httpx.Response) -> str:
    if response.status_code == httpx.codes.UNAUTHORIZED:
        return (
            f"RabbitMQ's management API at {address} refused the platform's credentials "
            "(HTTP 401): check the user and password in DTAAS_AMQP_MANAGEMENT_URL; the user "
            "needs the administrator tag"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    # RabbitMQ explains a refusal as {"error": ..., "reason": ...}.
    reason = str(body.get("reason", "")) if isinstance(body, dict) else response.text
    return (
        f"RabbitMQ's management API at {address} answered {request} with HTTP "
        f"{response.status_code}: {reason[:200] or response.reason_phrase}"
    )


class _Management:
    """A session with the management API; every failure is a BackendUnavailable."""

    def __init__(self, settings: Settings) -> None:
        self.address, credentials = _management(settings)
        self.client = httpx.Client(base_url=self.address, auth=credentials, timeout=TIMEOUT_SECONDS)

    def __enter__(self) -> _Management:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, str] | None = None,
        *,
        missing_is_fine: bool = False,
    ) -> httpx.Response:
        """One request below ``/api``. Raises: BackendUnavailable."""
        try:
            response = self.client.request(method, f"/api{path}", json=body)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(_failure(self.address, exc)) from exc
        if response.is_success or (missing_is_fine and response.status_code == 404):
            return response
        raise BackendUnavailable(_refusal(self.address, f"{method} /api{path}", response))

    def description_of(self, vhost: str) -> str | None:
        """The description of ``vhost``, or None if there is no such vhost.

        Raises: BackendUnavailable.
        """
        response = self.call("GET", f"/vhosts/{vhost}", missing_is_fine=True)
        if response.status_code == 404:
            return None
        return str(response.json().get("description", ""))


def provision(settings: Settings, instance_id: int, owner: str) -> str | None:
    """Create (or re-create) the instance's vhost and user; returns its URL.

    None where nothing is isolated (no broker, or no management API): the job then gets
    the shared ``amqp_url``. Idempotent: a job re-run after a revoke gets its user back.

    Raises: BackendUnavailable when the management API does not answer or refuses.
    """
    if not is_isolated(settings):
        return None
    name = quote(account_name(settings, instance_id), safe="")
    # Says whose the vhost is: keep the format, provision compares it.
    description = f"dtaas instance {instance_id} of {owner}"
    with _Management(settings) as api:
        left = api.description_of(name)
        if left is not None and left != description:
            # SQLite gives a new instance the id of the newest one once that is deleted; if
            # the delete could not drop its vhost, it still holds another user's messages.
            log.warning("amqp vhost of a deleted instance dropped instance_id=%s", instance_id)
            api.call("DELETE", f"/users/{name}", missing_is_fine=True)
            api.call("DELETE", f"/vhosts/{name}", missing_is_fine=True)
        api.call("PUT", f"/vhosts/{name}", {"description": description})
        api.call(
            "PUT", f"/users/{name}", {"password": _password(settings, instance_id), "tags": ""}
        )
        api.call("PUT", f"/permissions/{name}/{name}", ALL_IN_ITS_VHOST)
    log.info("amqp provisioned instance_id=%s", instance_id)
    return instance_url(settings, instance_id)


def revoke(settings: Settings, instance_id: int) -> None:
    """Delete the instance's user: no more logins, and RabbitMQ closes its connections.

    Its vhost, with queues and messages, stays. Failures are logged, not raised.
    """
    if not is_isolated(settings):
        return
    name = quote(account_name(settings, instance_id), safe="")
    try:
        with _Management(settings) as api:
            api.call("DELETE", f"/users/{name}", missing_is_fine=True)
    except BackendUnavailable:
        log.exception("amqp login not revoked instance_id=%s", instance_id)
        return
    log.info("amqp login revoked instance_id=%s", instance_id)


def drop(settings: Settings, instance_id: int) -> None:
    """Delete the instance's user and its vhost with the queues and messages in it.

    Failures are logged, not raised.
    """
    if not is_isolated(settings):
        return
    name = quote(account_name(settings, instance_id), safe="")
    try:
        with _Management(settings) as api:
            api.call("DELETE", f"/users/{name}", missing_is_fine=True)
            api.call("DELETE", f"/vhosts/{name}", missing_is_fine=True)
    except BackendUnavailable:
        log.exception("amqp vhost not dropped instance_id=%s", instance_id)
        return
    log.info("amqp vhost dropped instance_id=%s", instance_id)
