"""Health checks against the machine's real Mosquitto, RabbitMQ and PostgreSQL, and against
ports that refuse or never answer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from dtaas.services import health as health_module
from dtaas.services.checks import Target
from dtaas.services.health import Health, HealthMonitor, run_check
from dtaas.services.models import HealthStatus, ServiceKind
from tests.services.support import (
    MOSQUITTO_URL,
    POSTGRES_URL,
    RABBITMQ_URL,
    Stopwatch,
    closed_port,
    silent_port,
    url_at,
)

TIMEOUT = 1.0
# Scheduling slack on a busy two-core machine; far below the sum of several timeouts.
SLACK = 1.0
KINDS = [kind.value for kind in ServiceKind]


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        (ServiceKind.MQTT, MOSQUITTO_URL),
        (ServiceKind.AMQP, RABBITMQ_URL),
        (ServiceKind.POSTGRES, POSTGRES_URL),
    ],
    ids=["mosquitto", "rabbitmq", "postgresql"],
)
def test_round_trip_on_a_real_service_is_up(kind: ServiceKind, url: str) -> None:
    before = datetime.now(UTC)

    health = run_check(Target(name=kind.value, kind=kind, url=url), timeout=TIMEOUT)

    assert health.status == HealthStatus.UP, health.error
    assert health.error is None
    assert health.latency_ms is not None
    assert 0 < health.latency_ms < TIMEOUT * 1000
    assert health.checked_at is not None
    assert before <= health.checked_at <= datetime.now(UTC)


def test_amqp_credentials_given_apart_from_the_url_are_used() -> None:
    target = Target(
        name="rabbit",
        kind=ServiceKind.AMQP,
        url="amqp://127.0.0.1:5672/",
        username="guest",
        password="guest",
    )

    assert run_check(target, timeout=TIMEOUT).status == HealthStatus.UP


def test_wrong_amqp_password_is_down_and_the_reason_never_shows_it() -> None:
    target = Target(
        name="rabbit",
        kind=ServiceKind.AMQP,
        url="amqp://127.0.0.1:5672/",
        username="guest",
        password="not-the-password-7",
    )

    health = run_check(target, timeout=TIMEOUT)

    assert health.status == HealthStatus.DOWN
    assert health.error == "authentication failed: check the username and password"


def test_unknown_amqp_virtual_host_is_down_naming_it() -> None:
    target = Target(
        name="rabbit", kind=ServiceKind.AMQP, url="amqp://guest:guest@127.0.0.1:5672/nowhere"
    )

    health = run_check(target, timeout=TIMEOUT)

    assert health.status == HealthStatus.DOWN
    assert health.error == "access to virtual host 'nowhere' was denied"


def test_unknown_postgres_database_is_down_with_the_server_reason() -> None:
    target = Target(
        name="pg",
        kind=ServiceKind.POSTGRES,
        url="postgresql://postgres@127.0.0.1:5432/no_such_database_here",
    )

    health = run_check(target, timeout=TIMEOUT)

    assert health.status == HealthStatus.DOWN
    assert health.error == 'database "no_such_database_here" does not exist'


def test_http_service_answering_is_up_and_a_non_http_port_is_down() -> None:
    # RabbitMQ's AMQP port answers an HTTP request by closing the connection.
    health = run_check(
        Target(name="web", kind=ServiceKind.HTTP, url="http://127.0.0.1:5672/"), timeout=TIMEOUT
    )

    assert health.status == HealthStatus.DOWN
    assert health.error


@pytest.mark.parametrize("kind", KINDS)
def test_refused_port_is_down_at_once(kind: str) -> None:
    with closed_port() as port:
        watch = Stopwatch()
        health = run_check(
            Target(name=kind, kind=ServiceKind(kind), url=url_at(kind, port)), timeout=TIMEOUT
        )

    assert health.status == HealthStatus.DOWN
    assert health.error == "connection refused: nothing listens at that address"
    assert health.latency_ms is None
    assert watch.elapsed < TIMEOUT


@pytest.mark.parametrize("kind", KINDS)
def test_silent_port_is_down_within_the_timeout(kind: str) -> None:
    monitor = HealthMonitor(timeout=TIMEOUT, cache_seconds=0)
    with silent_port() as port:
        watch = Stopwatch()
        health = monitor.check([Target(name=kind, kind=ServiceKind(kind), url=url_at(kind, port))])[
            kind
        ]
        elapsed = watch.elapsed

    assert health.status == HealthStatus.DOWN
    assert health.error == f"no answer within {TIMEOUT:g} s"
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + SLACK


def test_unknown_host_is_down_naming_it() -> None:
    target = Target(name="m", kind=ServiceKind.MQTT, url="mqtt://no-such-host.invalid:1883")

    health = run_check(target, timeout=TIMEOUT)

    assert health.status == HealthStatus.DOWN
    assert health.error == "unknown host 'no-such-host.invalid'"


def test_checks_run_concurrently_so_the_total_is_one_timeout_not_the_sum() -> None:
    monitor = HealthMonitor(timeout=TIMEOUT, cache_seconds=0)
    with silent_port() as silent, closed_port() as closed:
        targets = [
            Target(name=f"silent-{kind}", kind=ServiceKind(kind), url=url_at(kind, silent))
            for kind in KINDS
        ]
        targets.append(Target(name="refused", kind=ServiceKind.MQTT, url=url_at("mqtt", closed)))
        targets.append(Target(name="mosquitto", kind=ServiceKind.MQTT, url=MOSQUITTO_URL))
        watch = Stopwatch()
        results = monitor.check(targets)
        elapsed = watch.elapsed

    assert elapsed < TIMEOUT + SLACK  # five silent services one after another take 5 s
    assert list(results) == [target.name for target in targets]
    assert results["mosquitto"].status == HealthStatus.UP
    assert results["refused"].status == HealthStatus.DOWN
    assert all(results[f"silent-{kind}"].status == HealthStatus.DOWN for kind in KINDS)


def test_results_are_cached_and_a_fresh_check_runs_again() -> None:
    monitor = HealthMonitor(timeout=TIMEOUT, cache_seconds=60)
    target = Target(name="mqtt", kind=ServiceKind.MQTT, url=MOSQUITTO_URL)

    first = monitor.check([target])["mqtt"]
    again = monitor.check([target])["mqtt"]
    fresh = monitor.check([target], fresh=True)["mqtt"]

    assert again is first
    assert fresh is not first
    assert fresh.checked_at is not None
    assert first.checked_at is not None
    assert fresh.checked_at > first.checked_at
    assert monitor.cached(target) is fresh


def test_forgetting_a_service_drops_its_cached_result() -> None:
    monitor = HealthMonitor(timeout=TIMEOUT, cache_seconds=60)
    target = Target(name="mqtt", kind=ServiceKind.MQTT, url=MOSQUITTO_URL)
    monitor.check([target])

    monitor.forget("mqtt")

    assert monitor.cached(target) is None


def test_callers_at_once_share_one_check_of_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monitor = HealthMonitor(timeout=TIMEOUT, cache_seconds=0)
    started: list[str] = []

    def counted(target: Target, *, timeout: float) -> Health:
        started.append(target.name)
        return run_check(target, timeout=timeout)

    monkeypatch.setattr(health_module, "run_check", counted)
    results: list[dict[str, Health]] = []
    with silent_port() as port:
        target = Target(name="hung-broker", kind=ServiceKind.MQTT, url=url_at("mqtt", port))
        callers = [
            threading.Thread(target=lambda: results.append(monitor.check([target])))
            for _ in range(5)
        ]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(TIMEOUT + SLACK)

    assert started == ["hung-broker"]
    assert len(results) == 5
    assert all(result["hung-broker"].status == HealthStatus.DOWN for result in results)


def test_a_known_problem_is_reported_without_connecting() -> None:
    target = Target(
        name="x", kind=ServiceKind.AMQP, url=RABBITMQ_URL, problem="the password is unreadable"
    )

    health = run_check(target, timeout=TIMEOUT)

    assert health.status == HealthStatus.DOWN
    assert health.error == "the password is unreadable"


def test_a_password_quoted_by_a_library_error_is_blanked() -> None:
    target = Target(
        name="x",
        kind=ServiceKind.AMQP,
        url=RABBITMQ_URL,
        username="guest",
        password="hunter2-secret",
        problem="login hunter2-secret refused",
    )

    assert run_check(target, timeout=TIMEOUT).error == "login *** refused"
