"""Per-instance MQTT accounts: a job gets credentials of its instance's own, confined to its
topic prefix ``dtaas/<owner>/<instance>/``, wherever the site's broker can enforce that.

| the site's MQTT broker | an instance's account |
|---|---|
| embedded (no ``mqtt_url``) | an entry in the embedded broker's book (``broker_access``) |
| ``mqtt_url`` with ``mqtt_dynsec`` | a dynsec client and role on Mosquitto (``mqtt_dynsec``) |
| ``mqtt_url`` alone | none: the broker is used as configured and jobs get its URL |

Names and passwords come from ``mqtt_names`` (derived, nothing stored). Where isolation is
configured and the account cannot be made, provisioning raises BackendUnavailable and the
job fails with that message: it never gets the platform's own credentials instead.
"""

from __future__ import annotations

import logging
from typing import Literal

from dtaas.config import Settings
from dtaas.errors import BackendUnavailable
from dtaas.services import broker as embedded
from dtaas.services import broker_access, mqtt_dynsec, mqtt_names

log = logging.getLogger(__name__)

Isolation = Literal["embedded", "dynsec"]


def isolation(settings: Settings) -> Isolation | None:
    """How the site's broker confines instances; None where it cannot (an anonymous broker)."""
    if embedded.is_wanted(settings):
        return "embedded"
    if settings.mqtt_url and settings.mqtt_dynsec:
        return "dynsec"
    return None


def provision(settings: Settings, instance_id: int, owner: str) -> str | None:
    """The URL the instance's jobs connect with, or None where the broker isolates nothing.

    Makes the account on first use and re-enables it on later ones (a clean job after
    terminate, which revoked it).

    Raises: BackendUnavailable if isolation is configured and the account cannot be made.
    """
    mode = isolation(settings)
    if mode is None:
        return None
    if mode == "embedded":
        broker = embedded.running_broker(settings)
        if broker is None:
            raise BackendUnavailable(
                "The embedded MQTT broker is not running in this process, so the instance's "
                "MQTT account could not be made; the platform's log says why it did not "
                "start. Restart the platform, or set DTAAS_MQTT_URL to a broker."
            )
        try:
            broker_access.save_account(settings, instance_id, owner=owner, is_enabled=True)
        except OSError as exc:
            raise BackendUnavailable(
                f"The embedded MQTT broker's account of instance {instance_id} could not be "
                f"written ({exc.strerror or type(exc).__name__}); check the data directory."
            ) from exc
        base = broker.url
    else:
        mqtt_dynsec.provision(settings, instance_id, owner)
        base = settings.mqtt_url or ""
    log.info("mqtt account provisioned instance_id=%s broker=%s", instance_id, mode)
    return mqtt_names.with_credentials(
        base,
        mqtt_names.instance_username(settings, instance_id),
        mqtt_names.instance_password(settings, instance_id, owner),
    )


def revoke(settings: Settings, instance_id: int) -> None:
    """The instance's account stops working; its connections end."""
    mode = isolation(settings)
    username = mqtt_names.instance_username(settings, instance_id)
    try:
        if mode == "embedded":
            account = broker_access.read_account(settings, instance_id)
            if account is not None:
                broker_access.save_account(
                    settings, instance_id, owner=account.owner, is_enabled=False
                )
            embedded.drop_connections(settings, username)
        elif mode == "dynsec":
            mqtt_dynsec.revoke(settings, instance_id)
    except (OSError, BackendUnavailable):
        log.exception("mqtt account not revoked instance_id=%s", instance_id)
        return
    if mode is not None:
        log.info("mqtt account revoked instance_id=%s broker=%s", instance_id, mode)


def drop(settings: Settings, instance_id: int) -> None:
    """Remove the instance's account (and end its connections)."""
    mode = isolation(settings)
    username = mqtt_names.instance_username(settings, instance_id)
    try:
        if mode == "embedded":
            broker_access.remove_account(settings, instance_id)
            embedded.drop_connections(settings, username)
        elif mode == "dynsec":
            mqtt_dynsec.drop(settings, instance_id)
    except (OSError, BackendUnavailable):
        log.exception("mqtt account not dropped instance_id=%s", instance_id)


def prepare(settings: Settings) -> None:
    """At start: give a dynsec admin its role on ``dtaas/#`` (telemetry, health checks).

    A broker that cannot be reached now is logged; the first job's provisioning tries again.
    """
    if isolation(settings) != "dynsec":
        return
    try:
        mqtt_dynsec.ensure_platform_role(settings)
    except BackendUnavailable as exc:
        log.warning("mqtt platform role not checked: %s", exc.message)
