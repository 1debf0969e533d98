"""Per-instance accounts on a Mosquitto with its dynamic-security plugin (``mqtt_dynsec``).

The platform's ``mqtt_url`` names a dynsec admin. For each instance that uses MQTT it makes
a role ``dtaas_<site>_i<id>`` allowing publish, subscribe and receive on the instance's
prefix ``dtaas/<owner>/<id>/#`` (and denying everything else, whatever the broker's default
ACL access says) and a client of the same name with that role and the derived password.
Terminate disables the client, which makes Mosquitto disconnect it; clean and delete remove
client and role. The admin gets a role of its own on ``dtaas/#``, so the platform can ingest
telemetry and run its health check's round trip.

Commands go to ``$CONTROL/dynamic-security/v1`` in one message, each tagged with
correlation data; their answers come back on ``.../response`` (paho-mqtt, in the calling
thread, bounded by a timeout).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from dtaas.config import Settings
from dtaas.errors import BackendUnavailable
from dtaas.services import mqtt_names

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.02
ACL_TYPES = ("publishClientSend", "publishClientReceive", "subscribePattern")
ALREADY_EXISTS = frozenset({"Role already exists", "Client already exists"})
NOT_FOUND = frozenset({"Client not found", "Role not found"})
_HINT = (
    "DTAAS_MQTT_DYNSEC needs DTAAS_MQTT_URL to name an admin of Mosquitto's "
    "dynamic-security plugin (docs/services.md)"
)

Command = dict[str, object]
Response = dict[str, object]


@dataclass
class _Exchange:
    """What the broker has answered so far in one exchange of commands."""

    token: str
    connected: bool = False
    subscribed: bool = False
    published: bool = False
    refused: str | None = None
    responses: dict[str, Response] = field(default_factory=dict)

    def on_connect(
        self,
        client: mqtt.Client,  # noqa: ARG002  # paho's callback signature
        userdata: object,  # noqa: ARG002
        flags: mqtt.ConnectFlags,  # noqa: ARG002
        reason: ReasonCode,
        properties: Properties | None,  # noqa: ARG002
    ) -> None:
        if reason.is_failure:
            self.refused = f"refused the platform's account ({reason})"
        else:
            self.connected = True

    def on_subscribe(
        self,
        client: mqtt.Client,  # noqa: ARG002
        userdata: object,  # noqa: ARG002
        mid: int,  # noqa: ARG002
        reasons: list[ReasonCode],
        properties: Properties | None,  # noqa: ARG002
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            self.refused = f"does not let the platform's account subscribe to {RESPONSE_TOPIC}"
        else:
            self.subscribed = True

    def on_message(
        self,
        client: mqtt.Client,  # noqa: ARG002
        userdata: object,  # noqa: ARG002
        message: mqtt.MQTTMessage,
    ) -> None:
        try:
            answers = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        for answer in answers if isinstance(answers, list) else []:
            tag = answer.get("correlationData") if isinstance(answer, dict) else None
            if isinstance(tag, str) and tag.startswith(f"{self.token}:"):
                self.responses[tag] = answer


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (8883 if parts.scheme == 'mqtts' else 1883)}"


def run(
    url: str,
    commands: list[Command],
    *,
    tolerated: Iterable[str] = (),
    may_disconnect: bool = False,
    timeout: float = TIMEOUT_SECONDS,
) -> list[Response]:
    """Send ``commands`` as the admin of ``url`` and return their responses, in order.

    ``tolerated`` errors (e.g. "Client already exists") are returned like successes.
    ``may_disconnect``: the commands change the admin's own roles, for which Mosquitto
    disconnects it, answer or not; a disconnect after publishing then ends the exchange.

    Raises: BackendUnavailable if the broker is unreachable, refuses the admin, does not
    answer in time or answers a command with an error that is not tolerated.
    """
    parts = urlsplit(url)
    is_tls = parts.scheme == "mqtts"
    where = _where(url)
    exchange = _Exchange(token=uuid.uuid4().hex)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"dtaas-dynsec-{exchange.token[:12]}",
        protocol=mqtt.MQTTv311,
    )
    client.on_connect = exchange.on_connect
    client.on_subscribe = exchange.on_subscribe
    client.on_message = exchange.on_message
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
    if is_tls:
        client.tls_set()
    deadline = time.monotonic() + timeout
    client.connect_timeout = timeout
    try:
        client.connect(parts.hostname or "127.0.0.1", parts.port or (8883 if is_tls else 1883))
    except OSError as exc:
        raise BackendUnavailable(
            f"The MQTT broker at {where} is unreachable ({exc.strerror or type(exc).__name__}); "
            "the instance's MQTT account could not be made."
        ) from exc
    tagged = [
        {**command, "correlationData": f"{exchange.token}:{index}"}
        for index, command in enumerate(commands)
    ]
    try:
        _until(client, exchange, lambda: exchange.connected, deadline, where, timeout=timeout)
        client.subscribe(RESPONSE_TOPIC, qos=1)
        _until(client, exchange, lambda: exchange.subscribed, deadline, where, timeout=timeout)
        client.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}), qos=1)
        exchange.published = True
        _until(
            client,
            exchange,
            lambda: len(exchange.responses) == len(tagged),
            deadline,
            where,
            timeout=timeout,
            may_disconnect=may_disconnect,
        )
    finally:
        client.disconnect()
        client.loop(timeout=0)  # sends the DISCONNECT; the socket closes with it
    responses = [exchange.responses.get(str(command["correlationData"]), {}) for command in tagged]
    allowed = set(tolerated)
    for command, response in zip(commands, responses, strict=True):
        error = response.get("error")
        if error is not None and error not in allowed:
            name = command.get("username") or command.get("rolename") or ""
            raise BackendUnavailable(
                f"Mosquitto at {where} refused {command['command']} {name}: {error}."
            )
    return responses


def _until(
    client: mqtt.Client,
    exchange: _Exchange,
    done: Callable[[], bool],
    deadline: float,
    where: str,
    *,
    timeout: float,
    may_disconnect: bool = False,
) -> None:
    """Run paho's network loop in this thread until ``done()``; raise on refusal or timeout."""
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise BackendUnavailable(
                f"The MQTT broker at {where} did not answer the dynamic-security commands "
                f"within {timeout:g} s; {_HINT}."
            )
        code = client.loop(timeout=min(POLL_SECONDS, left))
        if exchange.refused:
            raise BackendUnavailable(f"The MQTT broker at {where} {exchange.refused}; {_HINT}.")
        if code != mqtt.MQTT_ERR_SUCCESS:
            if may_disconnect and exchange.published:
                return
            raise BackendUnavailable(
                f"The MQTT broker at {where} closed the connection "
                f"({mqtt.error_string(code)}); {_HINT}."
            )


def _acls(topic: str, *, deny_others: bool) -> list[Command]:
    acls: list[Command] = [
        {"acltype": kind, "topic": topic, "priority": 1, "allow": True} for kind in ACL_TYPES
    ]
    if deny_others:
        # Explicit, so that a broker whose default ACL access allows more isolates anyway.
        acls += [
            {"acltype": kind, "topic": "#", "priority": 0, "allow": False} for kind in ACL_TYPES
        ]
    return acls


def _admin_username(settings: Settings) -> str:
    return unquote(urlsplit(settings.mqtt_url or "").username or "")


def _has_role(response: Response, rolename: str) -> bool:
    data = response.get("data")
    client = data.get("client") if isinstance(data, dict) else None
    roles = client.get("roles") if isinstance(client, dict) else None
    return isinstance(roles, list) and any(
        isinstance(role, dict) and role.get("rolename") == rolename for role in roles
    )


def provision(settings: Settings, instance_id: int, owner: str) -> None:
    """Create (or update and re-enable) the instance's client and role.

    Raises: BackendUnavailable.
    """
    url = settings.mqtt_url or ""
    username = mqtt_names.instance_username(settings, instance_id)
    password = mqtt_names.instance_password(settings, instance_id, owner)
    acls = _acls(mqtt_names.topic_prefix(owner, instance_id) + "#", deny_others=True)
    roles = [{"rolename": username}]
    responses = run(
        url,
        [
            {"command": "createRole", "rolename": username, "acls": acls},
            {"command": "modifyRole", "rolename": username, "acls": acls},
            {"command": "createClient", "username": username, "password": password, "roles": roles},
            # An existing client may have another password (a new site secret) or roles.
            {"command": "modifyClient", "username": username, "password": password, "roles": roles},
            {"command": "enableClient", "username": username},
            {"command": "getClient", "username": _admin_username(settings)},
        ],
        tolerated=ALREADY_EXISTS,
    )
    if not _has_role(responses[-1], mqtt_names.platform_username(settings)):
        ensure_platform_role(settings)
    log.info("mqtt account provisioned instance_id=%s broker=dynsec", instance_id)


def ensure_platform_role(settings: Settings) -> None:
    """Give the admin in ``mqtt_url`` a role on ``dtaas/#`` unless it has it already.

    A dynsec admin made by ``mosquitto_ctrl dynsec init`` may subscribe anywhere but
    publish nowhere outside ``$CONTROL``: the health check's round trip needs publishing.

    Raises: BackendUnavailable.
    """
    url = settings.mqtt_url or ""
    admin = _admin_username(settings)
    role = mqtt_names.platform_username(settings)
    acls = _acls(f"{mqtt_names.ROOT}#", deny_others=False)
    responses = run(
        url,
        [
            {"command": "createRole", "rolename": role, "acls": acls},
            {"command": "getClient", "username": admin},
        ],
        tolerated=ALREADY_EXISTS,
    )
    if _has_role(responses[-1], role):
        return
    # Mosquitto disconnects a client whose roles change, this very connection included.
    run(
        url,
        [{"command": "addClientRole", "username": admin, "rolename": role, "priority": 1}],
        may_disconnect=True,
    )
    log.info("mqtt platform role added role=%s", role)


def revoke(settings: Settings, instance_id: int) -> None:
    """Disable the instance's client; Mosquitto disconnects it.

    Raises: BackendUnavailable.
    """
    username = mqtt_names.instance_username(settings, instance_id)
    run(
        settings.mqtt_url or "",
        [{"command": "disableClient", "username": username}],
        tolerated=NOT_FOUND,
    )


def drop(settings: Settings, instance_id: int) -> None:
    """Delete the instance's client (disconnecting it) and role.

    Raises: BackendUnavailable.
    """
    username = mqtt_names.instance_username(settings, instance_id)
    run(
        settings.mqtt_url or "",
        [
            {"command": "deleteClient", "username": username},
            {"command": "deleteRole", "rolename": username},
        ],
        tolerated=NOT_FOUND,
    )


def exists(settings: Settings, instance_id: int) -> bool:
    """Whether the instance's client exists on the broker.

    Raises: BackendUnavailable.
    """
    username = mqtt_names.instance_username(settings, instance_id)
    response = run(
        settings.mqtt_url or "",
        [{"command": "getClient", "username": username}],
        tolerated=NOT_FOUND,
    )[0]
    return "error" not in response
