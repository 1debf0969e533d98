"""Fixtures of the services tests: settings pointing at the machine's real services."""

from __future__ import annotations

import pytest

from dtaas.config import Settings
from dtaas.services.health import HealthMonitor
from tests.services.support import MOSQUITTO_URL, POSTGRES_URL, RABBITMQ_URL


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings plus the machine's Mosquitto, RabbitMQ and PostgreSQL."""
    return settings.model_copy(
        update={
            "embedded_mqtt": False,  # tests that want the embedded broker ask for it
            "mqtt_url": MOSQUITTO_URL,
            "amqp_url": RABBITMQ_URL,
            "postgres_url": POSTGRES_URL,
            "service_check_timeout_seconds": 1.0,
        }
    )


@pytest.fixture
def monitor(settings: Settings) -> HealthMonitor:
    return HealthMonitor(
        timeout=settings.service_check_timeout_seconds,
        cache_seconds=settings.service_health_cache_seconds,
    )
