"""Per-instance accounts on the platform's services, one module per kind of service.

A job's environment carries the accounts its manifest's services need (made on first use,
re-made harmlessly on every job); the accounts stop working when the instance is terminated
and are removed with its data when it is cleaned or deleted. Where a service gives no
isolation (an anonymous broker), the job gets the shared URL and docs/services.md says so.
"""

from __future__ import annotations

from collections.abc import Iterable

from dtaas.config import Settings
from dtaas.services import amqp_accounts, mqtt_accounts
from dtaas.services import isolation as postgres_accounts


def provision(
    settings: Settings, *, instance_id: int, owner: str, kinds: Iterable[str]
) -> dict[str, str]:
    """The environment variables that replace the shared URLs with the instance's own."""
    wanted = set(kinds)
    env: dict[str, str] = {}
    if "mqtt" in wanted and (url := mqtt_accounts.provision(settings, instance_id, owner)):
        env["DTAAS_MQTT_URL"] = url
    if "amqp" in wanted and (url := amqp_accounts.provision(settings, instance_id, owner)):
        env["DTAAS_AMQP_URL"] = url
    if "postgres" in wanted and settings.postgres_url:
        env["DTAAS_POSTGRES_URL"] = postgres_accounts.provision(settings, instance_id)
    return env


def revoke(settings: Settings, instance_id: int) -> None:
    """The instance's accounts stop working (and their connections end); data stays."""
    mqtt_accounts.revoke(settings, instance_id)
    amqp_accounts.revoke(settings, instance_id)
    postgres_accounts.revoke(settings, instance_id)


def drop(settings: Settings, instance_id: int) -> None:
    """Remove the instance's accounts and what they hold (queues, schema)."""
    mqtt_accounts.drop(settings, instance_id)
    amqp_accounts.drop(settings, instance_id)
    postgres_accounts.drop(settings, instance_id)
