"""Health checks of services: one real round trip each, bounded in time, concurrent, cached.

Each check talks the service's own protocol (see ``checks``), so "up" means a DT could use
it, not only that a port is open. A check runs in its own daemon thread; the caller waits at
most the timeout, so a blackholed service is reported down in time even if its client
library is still waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from dtaas.services.checks import CHECKS, CheckFailed, Target
from dtaas.services.models import HealthStatus

log = logging.getLogger(__name__)

# Extra time the waiter gives a check beyond its timeout: the check bounds its own steps
# by the timeout, and the waiter should see that outcome rather than a guess.
WAIT_GRACE_SECONDS = 0.25
MAX_ERROR_CHARS = 200
MIN_SCRUBBED_CHARS = 4


@dataclass(frozen=True, slots=True)
class Health:
    """The outcome of one check."""

    status: HealthStatus
    latency_ms: float | None = None
    checked_at: datetime | None = None
    error: str | None = None

    @classmethod
    def unknown(cls) -> Health:
        return cls(status=HealthStatus.UNKNOWN)


# --- running checks ------------------------------------------------------------------------


def run_check(target: Target, *, timeout: float) -> Health:
    """Check ``target`` once, within about ``timeout`` seconds; never raises."""
    started = time.monotonic()
    try:
        if target.problem:
            raise CheckFailed(target.problem)
        CHECKS[target.kind](target, started + timeout, timeout)
    except CheckFailed as exc:
        return _down(_scrub(str(exc), target))
    except Exception as exc:  # a check must answer whatever its library raised
        log.warning("health check failed unexpectedly service=%s", target.name, exc_info=True)
        return _down(_scrub(f"unexpected error: {type(exc).__name__}", target))
    elapsed = (time.monotonic() - started) * 1000
    return Health(status=HealthStatus.UP, latency_ms=round(elapsed, 1), checked_at=_now())


def _now() -> datetime:
    return datetime.now(UTC)


def _down(reason: str) -> Health:
    return Health(status=HealthStatus.DOWN, checked_at=_now(), error=reason[:MAX_ERROR_CHARS])


def _scrub(message: str, target: Target) -> str:
    """Remove any password from a message: library errors sometimes quote their input."""
    secrets_in_play = [target.password, urlsplit(target.url).password]
    for secret in secrets_in_play:
        # A very short "password" would also blank ordinary letters out of the message.
        if secret and len(secret) >= MIN_SCRUBBED_CHARS:
            message = message.replace(secret, "***").replace(unquote(secret), "***")
    return message


class HealthMonitor:
    """Runs checks concurrently, at most one at a time per service, and caches their results.

    A refresh storm costs one round trip per service per ``cache_seconds``; a check still
    running when a caller gives up is joined by the next caller instead of being repeated.
    """

    def __init__(self, *, timeout: float, cache_seconds: float) -> None:
        # pika logs every failed connection as an ERROR with a traceback; a check's result
        # already says what went wrong, and a down service is not an error of the platform.
        logging.getLogger("pika").setLevel(logging.CRITICAL)
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Health]] = {}
        self._running: dict[str, Future[Health]] = {}

    def check(self, targets: Sequence[Target], *, fresh: bool = False) -> dict[str, Health]:
        """The health of each target by name, within about the timeout in all."""
        pending: dict[str, Future[Health]] = {}
        results: dict[str, Health] = {}
        for target in targets:
            cached = None if fresh else self.cached(target)
            if cached is not None:
                results[target.name] = cached
            else:
                pending[target.name] = self._start(target)
        deadline = time.monotonic() + self.timeout + WAIT_GRACE_SECONDS
        by_name = {target.name: target for target in targets}
        for name, future in pending.items():
            try:
                results[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                results[name] = _down(f"no answer within {self.timeout:g} s")
                self._store(by_name[name], results[name])
        return {target.name: results[target.name] for target in targets}

    def cached(self, target: Target) -> Health | None:
        """The last result for ``target`` if it is recent enough, else None."""
        with self._lock:
            entry = self._cache.get(target.key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def forget(self, name: str) -> None:
        """Drop the cached results of a service, e.g. after an admin changed it."""
        with self._lock:
            for key in [k for k in self._cache if k.split("\x00", 1)[0] == name]:
                del self._cache[key]

    def _start(self, target: Target) -> Future[Health]:
        with self._lock:
            running = self._running.get(target.key)
            if running is not None:
                return running
            future: Future[Health] = Future()
            self._running[target.key] = future
        thread = threading.Thread(
            target=self._work, args=(target, future), name=f"health-{target.name}", daemon=True
        )
        thread.start()
        return future

    def _work(self, target: Target, future: Future[Health]) -> None:
        health = run_check(target, timeout=self.timeout)
        self._store(target, health)
        with self._lock:
            self._running.pop(target.key, None)
        future.set_result(health)

    def _store(self, target: Target, health: Health) -> None:
        with self._lock:
            self._cache[target.key] = (time.monotonic() + self.cache_seconds, health)
