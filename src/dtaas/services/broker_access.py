"""Who may use the embedded MQTT broker: its account book, the gatekeeper that reads it,
and the amqtt plugins that ask the gatekeeper.

Nobody connects anonymously. The platform's own account (telemetry, health checks) may use
every topic below ``dtaas/``; an instance's account (``mqtt_names``) only its own prefix,
``dtaas/<owner>/<instance>/``, and only while the instance's entry in the account book says
it is enabled. ``mqtt_accounts`` writes the entries when a job starts, the instance is
terminated or it is cleaned.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from dtaas.config import Settings
from dtaas.services import mqtt_names

log = logging.getLogger(__name__)

ACCOUNTS_DIR = "mqtt-accounts"
GRANT = "dtaas_grant"  # the key of a session's Grant in amqtt's ``Session.attributes``


# --- the account book: which instance accounts exist and whether they may connect --------
#
# One small JSON file per instance in <data_dir>/mqtt-accounts: {"owner", "enabled"}.
# A list in the data directory rather than a question to the instance table: the broker
# needs no database, a platform restart (or another process of the site) sees the same
# state, and it fails closed: an account that is not listed, or listed as disabled, is
# refused, whatever the password.


@dataclass(frozen=True, slots=True)
class InstanceAccount:
    """An instance's entry in the embedded broker's account book."""

    owner: str
    is_enabled: bool


def _accounts_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / ACCOUNTS_DIR


def _account_path(settings: Settings, instance_id: int) -> Path:
    return _accounts_dir(settings) / f"{instance_id}.json"  # as Gatekeeper._account reads it


def save_account(settings: Settings, instance_id: int, *, owner: str, is_enabled: bool) -> None:
    """Write an instance's entry (atomically: a reader sees the old entry or the new one)."""
    path = _account_path(settings, instance_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps({"owner": owner, "enabled": is_enabled}))
    tmp.replace(path)


def read_account(settings: Settings, instance_id: int) -> InstanceAccount | None:
    """An instance's entry, or None if it has none (never provisioned, or dropped)."""
    return _parse_account(_account_path(settings, instance_id))


def remove_account(settings: Settings, instance_id: int) -> None:
    """Forget an instance's entry; its account is refused from now on."""
    _account_path(settings, instance_id).unlink(missing_ok=True)


def _parse_account(path: Path) -> InstanceAccount | None:
    try:
        data = json.loads(path.read_text())
        return InstanceAccount(owner=str(data["owner"]), is_enabled=data["enabled"] is True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("mqtt account entry unreadable path=%s; the account is refused", path.name)
        return None


@dataclass(frozen=True, slots=True)
class Grant:
    """What an authenticated connection may do: the topics below ``prefix``."""

    username: str
    prefix: str
    instance_id: int | None = None  # None: the platform's own account
    owner: str | None = None


class Gatekeeper:
    """Decides who may connect to the embedded broker and which topics each may use.

    Runs on the broker's event loop; every check is a few microseconds: an instance's
    entry is re-read only when its file changed (``stat``), so a revocation written by any
    process of the site counts from the next packet on.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.platform_username = mqtt_names.platform_username(settings)
        self._platform_password = mqtt_names.platform_password(settings)
        self._folder = _accounts_dir(settings)
        self._entries: dict[int, tuple[tuple[int, int, int], InstanceAccount | None]] = {}

    def admit(self, session: Session) -> bool:
        """Whether a CONNECT may proceed; records the connection's grant on its session."""
        username, password = session.username, session.password or ""
        if not username:
            return False
        previous = session.attributes.get(GRANT)
        if isinstance(previous, Grant) and previous.username != username:
            # A persistent session (clean_session=0) of another account, taken over by
            # client id: its subscriptions and queued messages are not this account's.
            return False
        grant = self._check(username, password)
        if grant is None:
            return False
        if session.will_flag and not mqtt_names.is_below(session.will_topic or "", grant.prefix):
            return False  # amqtt publishes a will without the topic check
        session.attributes[GRANT] = grant
        return True

    def permits(self, session: Session | None, topic: str | None) -> bool:
        """Whether the connection may publish to, subscribe to or receive ``topic``."""
        grant = session.attributes.get(GRANT) if session is not None else None
        if not isinstance(grant, Grant) or not topic:
            return False
        if grant.instance_id is not None:
            account = self._account(grant.instance_id)
            if account is None or not account.is_enabled or account.owner != grant.owner:
                return False
        return mqtt_names.is_below(topic, grant.prefix)

    def _check(self, username: str, password: str) -> Grant | None:
        if username == self.platform_username:
            if hmac.compare_digest(password.encode(), self._platform_password.encode()):
                return Grant(username=username, prefix=mqtt_names.ROOT)
            return None
        instance_id = mqtt_names.instance_id_of(self.settings, username)
        account = self._account(instance_id) if instance_id is not None else None
        if instance_id is None or account is None or not account.is_enabled:
            return None
        expected = mqtt_names.instance_password(self.settings, instance_id, account.owner)
        if not hmac.compare_digest(password.encode(), expected.encode()):
            return None
        return Grant(
            username=username,
            prefix=mqtt_names.topic_prefix(account.owner, instance_id),
            instance_id=instance_id,
            owner=account.owner,
        )

    def _account(self, instance_id: int) -> InstanceAccount | None:
        path = self._folder / f"{instance_id}.json"
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._entries.pop(instance_id, None)
            return None
        # Entries are replaced, never rewritten in place: a new inode is a new entry.
        signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        cached = self._entries.get(instance_id)
        if cached is not None and cached[0] == signature:
            return cached[1]
        account = _parse_account(path)
        self._entries[instance_id] = (signature, account)
        return account


class GatekeeperAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no types
    """amqtt's authentication hook: asks the gatekeeper (anonymous clients are refused)."""

    @dataclass
    class Config:
        gatekeeper: Gatekeeper | None = None

    async def authenticate(self, *, session: Session) -> bool:
        gatekeeper = self.config.gatekeeper
        return gatekeeper is not None and gatekeeper.admit(session)


class GatekeeperTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no types
    """amqtt's topic hook (publish, subscribe and each delivery): asks the gatekeeper."""

    @dataclass
    class Config:
        gatekeeper: Gatekeeper | None = None

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        del action  # the same topics for publishing, subscribing and receiving
        gatekeeper = self.config.gatekeeper
        return gatekeeper is not None and gatekeeper.permits(session, topic)


class CheckedBroker(Broker):  # type: ignore[misc]  # amqtt ships no types
    """amqtt's broker, minus one leak of retained messages and one loss of messages.

    On CONNECT, amqtt sends the client the retained messages matching *every* filter any
    client subscribed to, without a topic check (``Broker._handle_client_session``): an
    instance would get other instances' retained messages. Only filters the client may
    subscribe to itself are served here.

    On DISCONNECT, amqtt ends the session while PUBLISH packets read before it still wait
    in the session's queue, and drops them: a DT that publishes quickly and exits lost the
    end of its telemetry (half of a 3,000-message burst). They are handled first here, in
    the order they came.
    """

    async def _handle_disconnect(
        self,
        client_session: Session,
        handler: BrokerProtocolHandler,
        disconnect_waiter: asyncio.Future[Any],
    ) -> None:
        queue = client_session.delivered_message_queue
        while not queue.empty():
            delivered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            delivered.set_result(queue.get_nowait())
            if not await self._handle_message_delivery(client_session, handler, delivered):
                break
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        if await self._topic_filtering(session, subscription[0], Action.SUBSCRIBE):
            await super()._publish_retained_messages_for_subscription(subscription, session)
