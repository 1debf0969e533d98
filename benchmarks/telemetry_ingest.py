"""Benchmark: telemetry ingestion, from MQTT publishers to points the API can return.

Run from the repository root with the project's virtualenv:

    .venv/bin/python benchmarks/telemetry_ingest.py [--messages 50000] [--publishers 2]

It measures, in one run and on the same broker:

1. **broker pub→sub**: ``--publishers`` paho processes publish ``--messages`` QoS 0
   messages between them as fast as they can, and one paho subscriber in this process
   counts them: the most a single MQTT subscriber can take from this broker here;
2. **platform stored points/s**: a real ``dtaas serve`` (its own SQLite file, or
   ``--database-url``) subscribes; the same publishers send the same messages, each with
   ``--fields`` numeric fields, to instances' telemetry topics; timed until every point is
   in the database;
3. **publish→queryable latency**: ``--samples`` single messages, each timed from publish
   until ``GET /api/v1/instances/{id}/telemetry`` returns its point (p50/p99).

The broker is ``--mqtt-url`` (default the machine's Mosquitto at 127.0.0.1:1883) or, with
``--embedded``, the platform's own embedded broker. Counts and time are bounded (a phase
stops after ``--timeout`` seconds or 10 s without progress and reports what it got). The
server runs in its own process group, killed on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from server import STOP_TIMEOUT, Server

from dtaas.config import Settings
from dtaas.services import mqtt_names

STALL_SECONDS = 10.0  # a phase with no progress for this long ends and reports what it got
POLL_SECONDS = 0.005  # how often the latency phase asks the API
API = "/api/v1"
BENCH_PASSWORD = "Bench-passw0rd-telemetry"
MANIFEST = """manifest: 1
name: Telemetry bench
telemetry:
  - {field: f0, unit: "1"}
"""


def write(line: str = "") -> None:
    """Print a line of the report (the project forbids print() for logging's sake)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def connect(client: mqtt.Client, url: str) -> None:
    """Connect ``client`` to the broker at ``url``, signing in with the URL's account."""
    parts = urlsplit(url)
    if parts.username:
        client.username_pw_set(unquote(parts.username), unquote(parts.password or ""))
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)


# --- publishers (their own processes: one Python process cannot saturate a broker) -------


def publish_process(
    url: str, topic: str, count: int, fields: int, rate: float, go: EventType
) -> None:
    """Publish ``count`` QoS 0 messages of ``fields`` numbers to ``topic`` once ``go`` is set,
    at most ``rate`` a second (0: as fast as possible)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    client.max_queued_messages_set(0)  # unbounded: paho queues while the socket is busy
    connect(client, url)
    client.loop_start()
    go.wait()
    info = None
    started = time.perf_counter()
    for n in range(count):
        if rate and n % 50 == 0:  # pace in small bursts: sleeping per message costs too much
            ahead = n / rate - (time.perf_counter() - started)
            if ahead > 0:
                time.sleep(ahead)
        body: dict[str, float] = {f"f{k}": n + k for k in range(fields)}
        body["t"] = time.time()
        info = client.publish(topic, json.dumps(body), qos=0)
    if info is not None:
        info.wait_for_publish(timeout=120)
    client.disconnect()
    client.loop_stop()


@dataclass
class Publishers:
    """Publisher processes started and waiting; ``fire`` lets them all go at once."""

    processes: Sequence[multiprocessing.process.BaseProcess]
    go: EventType

    def fire(self) -> float:
        started = time.perf_counter()
        self.go.set()
        return started

    def join(self) -> None:
        for process in self.processes:
            process.join(timeout=STOP_TIMEOUT)
            if process.is_alive():
                process.kill()


@contextlib.contextmanager
def publishers(
    url: str, topics: list[str], total: int, fields: int, rate: float = 0.0
) -> Iterator[Publishers]:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    share = total // len(topics)
    processes = [
        context.Process(
            target=publish_process,
            args=(
                url,
                topic,
                share + (1 if n < total % len(topics) else 0),
                fields,
                rate / len(topics),
                go,
            ),
            daemon=True,
        )
        for n, topic in enumerate(topics)
    ]
    for process in processes:
        process.start()
    time.sleep(1.0)  # let them connect: the clock starts when they are told to go
    running = Publishers(processes=processes, go=go)
    try:
        yield running
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        running.join()


def progress_until(count: Callable[[], int], target: int, *, timeout: float) -> int:
    """Wait until ``count()`` reaches ``target``, the timeout passes or progress stalls."""
    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    while True:
        now_count = count()
        now = time.monotonic()
        if now_count >= target or now > deadline:
            return now_count
        if now_count != last:
            last, last_change = now_count, now
        elif now - last_change > STALL_SECONDS:
            return now_count
        time.sleep(0.02)


@dataclass(frozen=True)
class Load:
    """What the publishers send in each rate phase."""

    messages: int
    publishers: int
    fields: int
    rate: float  # messages/s of all publishers together; 0: as fast as they can
    timeout: float


# --- 1. the broker alone -----------------------------------------------------------------


def measure_broker(url: str, load: Load) -> tuple[int, float]:
    """Messages received by one paho subscriber, and the seconds they took."""
    run = uuid.uuid4().hex[:8]
    received = 0
    last_at = 0.0
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_client: mqtt.Client, _userdata: object, _message: mqtt.MQTTMessage) -> None:
        nonlocal received, last_at
        with lock:
            received += 1
            last_at = time.perf_counter()

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{run}")
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *_args: subscribed.set()
    connect(subscriber, url)
    subscriber.loop_start()
    try:
        # Below dtaas/ (the embedded broker's platform account may use nothing else), one level
        # short of dtaas/<user>/<instance>/, so the platform's telemetry ingester ignores them.
        topics = [f"dtaas/bench-{run}-{n}" for n in range(load.publishers)]
        subscriber.subscribe([(topic, 0) for topic in topics])
        if not subscribed.wait(10):
            raise SystemExit(f"the broker at {url} did not acknowledge the subscription")
        with publishers(url, topics, load.messages, load.fields, load.rate) as running:
            started = running.fire()
            got = progress_until(lambda: received, load.messages, timeout=load.timeout)
        with lock:
            return got, last_at - started
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()


# --- 2 and 3. the platform -----------------------------------------------------------------


class Site(Server):
    """A throw-away data directory and the `dtaas serve` process running on it."""

    def __init__(self, root: Path, *, mqtt_url: str | None, database_url: str | None) -> None:
        super().__init__(root)
        self.mqtt_url = mqtt_url
        self.database_url = database_url

    @property
    def settings(self) -> Settings:
        """The server's settings as far as its secrets go (they live in its data directory)."""
        return Settings(data_dir=self.data, secret_key=None)

    def start(self, *, flush_seconds: float) -> str:  # type: ignore[override]
        """Start the server; returns the admin's one-time demo password."""
        settings = {
            "DTAAS_EMBEDDED_MQTT_PORT": "0",
            "DTAAS_TELEMETRY_FLUSH_SECONDS": str(flush_seconds),
        }
        if self.mqtt_url:
            settings["DTAAS_MQTT_URL"] = self.mqtt_url
        if self.database_url:
            settings["DTAAS_DATABASE_URL"] = self.database_url
        return super().start(settings)["admin"]

    def write_twin(self, user: str) -> str:
        folder = self.data / "files" / user / "digital_twins" / "bench"
        (folder / "lifecycle").mkdir(parents=True)
        (folder / "lifecycle" / "execute").write_text("#!/bin/sh\n")
        (folder / "lifecycle" / "execute").chmod(0o755)
        (folder / "dt.yaml").write_text(MANIFEST)
        return f"{user}/digital_twins/bench"

    def count_points(self) -> int:
        """Points stored, read straight from the database (no load on the server)."""
        query = "SELECT count(*) FROM telemetry_point"
        if self.database_url:
            url = self.database_url.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(url) as connection:
                row = connection.execute(query).fetchone()
        else:
            path = self.data / "dtaas.db"
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                row = db.execute(query).fetchone()
        return int(row[0]) if row else 0


@contextlib.contextmanager
def running_site(
    *, mqtt_url: str | None, database_url: str | None, flush_seconds: float
) -> Iterator[tuple[Site, httpx.Client, str, dict[str, str]]]:
    """A started site, a client signed in as a fresh user, that user's name and the admin's
    headers (for /metrics)."""
    with tempfile.TemporaryDirectory(prefix="dtaas-bench-") as scratch:
        site = Site(Path(scratch), mqtt_url=mqtt_url, database_url=database_url)
        try:
            admin_password = site.start(flush_seconds=flush_seconds)
            # A user of its own: on a shared broker, other sites' topics never match it.
            user = f"bench{uuid.uuid4().hex[:10]}"
            admin = httpx.post(
                f"{site.url}{API}/auth/token",
                json={"username": "admin", "password": admin_password, "token_name": "bench"},
                trust_env=False,
            )
            admin.raise_for_status()
            admin_headers = {"Authorization": f"Bearer {admin.json()['token']}"}
            made = httpx.post(
                f"{site.url}{API}/users",
                headers=admin_headers,
                json={"username": user, "password": BENCH_PASSWORD, "role": "user"},
                trust_env=False,
            )
            made.raise_for_status()
            token = httpx.post(
                f"{site.url}{API}/auth/token",
                json={"username": user, "password": BENCH_PASSWORD, "token_name": "bench"},
                trust_env=False,
            )
            token.raise_for_status()
            headers = {"Authorization": f"Bearer {token.json()['token']}"}
            with httpx.Client(
                base_url=site.url, headers=headers, trust_env=False, timeout=60
            ) as client:
                yield site, client, user, admin_headers
        except BaseException:
            output = site.root / "server.out"
            if output.exists():
                write("the server's last output:")
                write("\n".join(output.read_text(errors="replace").splitlines()[-40:]))
            raise
        finally:
            site.stop()


def broker_of(site: Site, client: httpx.Client) -> str:
    """The site's MQTT broker; the embedded one with the platform's own account (it takes
    no anonymous clients), whose password is derived from the site's secret."""
    service = client.get(f"{API}/services/mqtt").json()
    url: str = service["url"]
    if service["username"] != mqtt_names.platform_username(site.settings):
        return url
    password = quote(mqtt_names.platform_password(site.settings), safe="")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{service['username']}:{password}@{parts.netloc}"))


def new_instance(client: httpx.Client, twin: str) -> int:
    response = client.post(f"{API}/instances", json={"twin_path": twin})
    response.raise_for_status()
    instance_id: int = response.json()["id"]
    return instance_id


def measure_platform(
    site: Site,
    client: httpx.Client,
    user: str,
    load: Load,
) -> tuple[int, float]:
    """Points stored, and the seconds from the first publish until the last was stored."""
    twin = site.write_twin(user)
    topics = [
        f"dtaas/{user}/{new_instance(client, twin)}/telemetry" for _ in range(load.publishers)
    ]
    url = broker_of(site, client)
    before = site.count_points()
    target = before + load.messages * load.fields
    with publishers(url, topics, load.messages, load.fields, load.rate) as running:
        started = running.fire()
        stored_at = started
        last = before

        def stored() -> int:
            nonlocal stored_at, last
            count = site.count_points()
            if count != last:
                last, stored_at = count, time.perf_counter()
            return count

        got = progress_until(stored, target, timeout=load.timeout) - before
    return got, stored_at - started


def measure_latency(site: Site, client: httpx.Client, user: str, *, samples: int) -> list[float]:
    """Milliseconds from publishing one message until the API returns its point."""
    instance_id = new_instance(client, f"{user}/digital_twins/bench")
    url = broker_of(site, client)
    publisher = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-lat-{uuid.uuid4().hex[:8]}"
    )
    connect(publisher, url)
    publisher.loop_start()
    timings: list[float] = []
    try:
        for n in range(samples):
            stamp = time.time()
            started = time.perf_counter()
            publisher.publish(
                f"dtaas/{user}/{instance_id}/telemetry", json.dumps({"lat": n, "t": stamp}), qos=0
            )
            deadline = started + 30
            while True:
                body = client.get(
                    f"{API}/instances/{instance_id}/telemetry",
                    params={"field": "lat", "start": repr(stamp - 1e-6)},
                ).json()
                if n in body.get("avg", []):
                    timings.append((time.perf_counter() - started) * 1000)
                    break
                if time.perf_counter() > deadline:
                    write(f"sample {n} did not become queryable within 30 s; skipped")
                    break
                time.sleep(POLL_SECONDS)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    return timings


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the server and publishers are still stopped."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)


def telemetry_counters(site: Site, admin_headers: dict[str, str]) -> dict[str, float]:
    """The platform's ``dtaas_telemetry_*`` counters from /metrics."""
    text = httpx.get(f"{site.url}/metrics", headers=admin_headers, trust_env=False).text
    found = {}
    for line in text.splitlines():
        match = re.match(r'^dtaas_telemetry_(\w+?)(?:_total)?(?:\{outcome="(\w+)"\})? (\S+)$', line)
        if match:
            name, outcome, value = match.groups()
            found[outcome or name] = float(value)
    return found


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=50_000, help="messages per rate phase")
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes")
    parser.add_argument("--fields", type=int, default=4, help="numeric fields per message")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages/s of all publishers; 0: flat out"
    )
    parser.add_argument("--samples", type=int, default=100, help="latency samples")
    parser.add_argument("--timeout", type=float, default=120.0, help="longest a phase runs (s)")
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883", help="the broker")
    parser.add_argument(
        "--embedded", action="store_true", help="use the platform's embedded broker instead"
    )
    parser.add_argument("--database-url", default=None, help="default: a SQLite file")
    parser.add_argument(
        "--flush-seconds", type=float, default=0.5, help="DTAAS_TELEMETRY_FLUSH_SECONDS"
    )
    options = parser.parse_args()
    if options.messages < options.publishers or options.publishers < 1:
        raise SystemExit("--messages must be at least --publishers, which must be at least 1")
    load = Load(
        messages=options.messages,
        publishers=options.publishers,
        fields=options.fields,
        rate=options.rate,
        timeout=options.timeout,
    )

    with running_site(
        mqtt_url=None if options.embedded else options.mqtt_url,
        database_url=options.database_url,
        flush_seconds=options.flush_seconds,
    ) as (site, client, user, admin_headers):
        broker = broker_of(site, client)
        pace = f"{options.rate:g} messages/s" if options.rate else "flat out"
        write(
            f"broker {broker}; {options.publishers} publisher processes, {pace}; "
            f"{options.messages} messages of {options.fields} fields per phase"
        )
        write("1/3 broker pub→sub ...")
        raw_got, raw_seconds = measure_broker(broker, load)
        write("2/3 platform ingestion ...")
        points, seconds = measure_platform(site, client, user, load)
        counters = telemetry_counters(site, admin_headers)
        write(f"3/3 publish→queryable latency ({options.samples} samples) ...")
        latencies = measure_latency(site, client, user, samples=options.samples)
        backend = "PostgreSQL" if options.database_url else "SQLite"

    report(options, raw_got, raw_seconds, points, seconds, latencies, counters, backend)


def report(
    options: argparse.Namespace,
    raw_got: int,
    raw_seconds: float,
    points: int,
    seconds: float,
    latencies: list[float],
    counters: dict[str, float],
    backend: str,
) -> None:
    expected_points = options.messages * options.fields
    write()
    write(f"{'':<38}{'count':>10}{'seconds':>9}{'per second':>12}")
    write("-" * 69)
    write(
        f"{'broker pub→sub (messages)':<38}{raw_got:>10}{raw_seconds:>9.2f}"
        f"{raw_got / max(raw_seconds, 1e-9):>12.0f}"
    )
    write(
        f"{f'platform stored ({backend}, points)':<38}{points:>10}{seconds:>9.2f}"
        f"{points / max(seconds, 1e-9):>12.0f}"
    )
    write(
        f"{'  the same, as messages':<38}{points // options.fields:>10}{seconds:>9.2f}"
        f"{points / options.fields / max(seconds, 1e-9):>12.0f}"
    )
    if latencies:
        write(
            f"publish→queryable over the API: p50 {statistics.median(latencies):.0f} ms, "
            f"p99 {percentile(latencies, 0.99):.0f} ms ({len(latencies)} samples; "
            f"flush every {options.flush_seconds:g} s)"
        )
    if raw_got < options.messages:
        write(f"the broker phase received {raw_got} of {options.messages} messages")
    if points < expected_points:
        reached = sum(counters.get(k, 0) for k in ("stored", "empty", "bad_payload", "overflow"))
        write(
            f"the platform stored {points} of {expected_points} points; its subscriber got "
            f"{reached:.0f} of our messages (the broker dropped the rest: the subscriber fell "
            f"behind), {counters.get('overflow', 0):.0f} overflowed its queue"
        )


if __name__ == "__main__":
    main()
