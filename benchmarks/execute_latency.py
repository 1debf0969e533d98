"""Benchmark: how long a phase takes to start through the API, and the API under many jobs.

Run from the repository root with the project's virtualenv:

    .venv/bin/python benchmarks/execute_latency.py [--samples 20] [--instances 500]

It starts ``dtaas serve`` on a free 127.0.0.1 port in a throw-away site and measures:

1. **start latency**: POST ``/api/v1/instances/{id}/phases`` ``{"phase": "execute"}`` until
   the script's first line is in the job's log file, next to a bare ``subprocess`` spawn of
   the same script (interleaved, in the same run), as a ratio;
2. **API latency under load**: p50/p99 of GET ``/api/v1/instances`` with ``--instances``
   idle instances, then with each of them running a sleeping job.

``--instances N`` starts N real jobs at once: about 5 processes each (shim, sandbox, shell,
sleep), ~15 MB of memory each, so 500 jobs take ~2500 processes and several GB. Use a smaller
N on a shared machine. Everything is stopped and the site deleted at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
from server import STOP_TIMEOUT, Server, wait_until

POLL_SECONDS = 0.001  # how often a log file is looked at while timing the first line
FIRST_LINE = "first line"
QUICK = f"#!/bin/sh\necho '{FIRST_LINE}'\n"
SLEEPER = "#!/bin/sh\necho sleeping\nexec sleep 3600\n"
API = "/api/v1"


def write(line: str = "") -> None:
    """Print a line of the report (the project forbids print() for logging's sake)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


class Site(Server):
    """A throw-away data directory and the `dtaas serve` process running on it."""

    def __init__(self, root: Path, *, max_jobs: int) -> None:
        super().__init__(root)
        self.max_jobs = max_jobs

    def start(self) -> str:  # type: ignore[override]  # the benchmark signs in as alice
        """Start the server; returns alice's one-time demo password."""
        limit = str(self.max_jobs)
        settings = {"DTAAS_JOBS_MAX_RUNNING": limit, "DTAAS_JOBS_MAX_RUNNING_PER_USER": limit}
        return super().start(settings)["alice"]

    def leftovers(self) -> list[psutil.Process]:
        """Job processes of this site still alive (shims, sandboxes, jobs)."""
        mark = f"{self.root}/"
        found = []
        for process in psutil.process_iter():
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if any(mark in part for part in process.cmdline()):
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def write_twin(self, name: str, execute: str) -> str:
        lifecycle = self.data / "files" / "alice" / "digital_twins" / name / "lifecycle"
        lifecycle.mkdir(parents=True)
        (lifecycle / "execute").write_text(execute)
        (lifecycle / "execute").chmod(0o755)
        return f"alice/digital_twins/{name}"

    def log_file(self, instance_id: int, job_id: int) -> Path:
        return self.data / "instances" / str(instance_id) / "logs" / f"job-{job_id}.out"

    def working_copy(self, instance_id: int) -> Path:
        return self.data / "instances" / str(instance_id) / "dt"

    def count_jobs(self, state: str) -> int:
        with contextlib.closing(
            sqlite3.connect(f"file:{self.data / 'dtaas.db'}?mode=ro", uri=True)
        ) as database:
            (count,) = database.execute(
                "SELECT count(*) FROM job WHERE state = ?", (state,)
            ).fetchone()
        return int(count)


@contextlib.contextmanager
def running_site(*, max_jobs: int) -> Iterator[tuple[Site, httpx.Client]]:
    with tempfile.TemporaryDirectory(prefix="dtaas-bench-") as scratch:
        site = Site(Path(scratch), max_jobs=max_jobs)
        try:
            password = site.start()
            login = {"username": "alice", "password": password, "token_name": "bench"}
            created = httpx.post(f"{site.url}{API}/auth/token", json=login, trust_env=False)
            created.raise_for_status()
            headers = {"Authorization": f"Bearer {created.json()['token']}"}
            with httpx.Client(
                base_url=site.url, headers=headers, trust_env=False, timeout=120
            ) as client:
                yield site, client
        except BaseException:
            output = site.root / "server.out"
            if output.exists():
                write("the server's last output:")
                write("\n".join(output.read_text(errors="replace").splitlines()[-40:]))
            raise
        finally:
            site.stop()
            left = site.leftovers()
            for process in left:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            psutil.wait_procs(left, timeout=STOP_TIMEOUT)
            if left:
                write(f"warning: killed {len(left)} process(es) the site left behind")


class Errors:
    """Server errors met (and retried) outside the timed requests."""

    count = 0


def post(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """POST, retried on a server error or a dropped connection (counted in ``Errors``).

    With SQLite, a write that meets the supervisor's write can fail with "database is
    locked"; the benchmark should measure, not stop there.
    """
    for attempt in range(100):
        try:
            response = client.post(path, json=body)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code < 500:
            response.raise_for_status()
            return response
        Errors.count += 1
        time.sleep(min(0.5, 0.02 * (attempt + 1)))  # back off: the supervisor holds the lock
    raise SystemExit(f"POST {path} kept failing; see the server's output")


def first_line_seen(path: Path) -> bool:
    try:
        return FIRST_LINE in path.read_text()
    except FileNotFoundError:
        return False


def timed_until(condition: Callable[[], bool], started: float, timeout: float = 60.0) -> float:
    """Milliseconds from ``started`` until ``condition`` holds (polled every millisecond)."""
    deadline = started + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise SystemExit("a job's first line did not appear within a minute")
        time.sleep(POLL_SECONDS)
    return (time.perf_counter() - started) * 1000


def measure_start_latency(
    site: Site, client: httpx.Client, samples: int
) -> tuple[list[float], list[float]]:
    """Milliseconds to the first log line: through the API, and as a bare subprocess."""
    twin = site.write_twin("quick", QUICK)
    instance_id = post(client, f"{API}/instances", {"twin_path": twin}).json()["id"]
    script = site.working_copy(instance_id) / "lifecycle" / "execute"
    bare_log = site.root / "bare.out"
    api_ms: list[float] = []
    bare_ms: list[float] = []

    def ready() -> bool:
        state: str = client.get(f"{API}/instances/{instance_id}").json()["state"]
        return state == "ready"

    for _ in range(samples):
        started = time.perf_counter()
        queued = post(client, f"{API}/instances/{instance_id}/phases", {"phase": "execute"})
        log = site.log_file(instance_id, queued.json()["id"])

        def seen(log: Path = log) -> bool:
            return first_line_seen(log)

        api_ms.append(timed_until(seen, started))
        wait_until(ready, timeout=60, what="the instance to be ready again")
        bare_log.unlink(missing_ok=True)
        with bare_log.open("wb") as out:
            started = time.perf_counter()
            bare = subprocess.Popen(  # noqa: S603  # the DT's own script, as the job runs it
                [str(script)], cwd=script.parent.parent, stdout=out, stdin=subprocess.DEVNULL
            )
        bare_ms.append(timed_until(lambda: first_line_seen(bare_log), started))
        bare.wait(timeout=60)
    return api_ms, bare_ms


def measure_listing(client: httpx.Client, requests: int) -> list[float]:
    client.get(f"{API}/instances").raise_for_status()  # warm-up, not counted
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(f"{API}/instances").raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def start_sleepers(site: Site, client: httpx.Client, count: int) -> tuple[list[int], float]:
    """``count`` idle instances of a sleeping DT, and the seconds it took to create them."""
    twin = site.write_twin("sleeper", SLEEPER)
    started = time.perf_counter()
    instances = []
    for _ in range(count):
        instances.append(post(client, f"{API}/instances", {"twin_path": twin}).json()["id"])
    return instances, time.perf_counter() - started


def stop_all(site: Site, client: httpx.Client, instances: list[int]) -> None:
    """Terminate every instance (which cancels its job) and wait until no job runs."""
    for instance_id in instances:
        with contextlib.suppress(httpx.HTTPStatusError):  # 409: already terminated
            post(client, f"{API}/instances/{instance_id}/terminate")
    wait_until(
        lambda: site.count_jobs("running") + site.count_jobs("cancelling") == 0,
        timeout=STOP_TIMEOUT + 10 * len(instances),
        what="every job to stop",
    )


def row(label: str, values: list[float], *, ratio: float | None = None) -> str:
    cells = [statistics.median(values), percentile(values, 0.9), percentile(values, 0.99)]
    text = f"{label:<34}{len(values):>5}" + "".join(f"{cell:>10.1f}" for cell in cells)
    return text + (f"{ratio:>9.1f}" if ratio is not None else "")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the jobs and the site are still cleaned up."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=20, help="start-latency samples")
    parser.add_argument(
        "--instances",
        type=int,
        default=500,
        help="sleeping jobs for the API-under-load part; ~5 processes and ~15 MB each",
    )
    parser.add_argument("--requests", type=int, default=200, help="GET requests per phase")
    options = parser.parse_args()

    with running_site(max_jobs=options.instances + 8) as (site, client):
        write(f"measuring start latency ({options.samples} samples) ...")
        api_ms, bare_ms = measure_start_latency(site, client, options.samples)
        write(f"creating {options.instances} instances ...")
        instances, creating = start_sleepers(site, client, options.instances)
        write(f"measuring GET {API}/instances with {options.instances} idle instances ...")
        idle_ms = measure_listing(client, options.requests)
        write(f"starting {options.instances} sleeping jobs ...")
        started = time.perf_counter()
        try:
            for instance_id in instances:
                post(client, f"{API}/instances/{instance_id}/phases", {"phase": "execute"})
            wait_until(
                lambda: site.count_jobs("running") == options.instances,
                timeout=60 + options.instances,
                what=f"{options.instances} running jobs",
            )
            starting = time.perf_counter() - started
            write(f"measuring GET {API}/instances with {options.instances} jobs running ...")
            busy_ms = measure_listing(client, options.requests)
        finally:
            write("stopping every job ...")
            stop_all(site, client, instances)

    write()
    header = f"{'':<34}{'n':>5}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'p50 x':>9}"
    write(header)
    write("-" * len(header))
    write(row("bare subprocess: first line", bare_ms, ratio=1.0))
    ratio = statistics.median(api_ms) / statistics.median(bare_ms)
    write(row("POST phases: first line in log", api_ms, ratio=ratio))
    write(row(f"GET instances, {options.instances} idle", idle_ms, ratio=1.0))
    busy_ratio = statistics.median(busy_ms) / statistics.median(idle_ms)
    write(row(f"GET instances, {options.instances} jobs running", busy_ms, ratio=busy_ratio))
    write()
    write(
        f"{options.instances} instances created in {creating:.1f} s; "
        f"their jobs were all running after {starting:.1f} s."
    )
    write("p50 x: median relative to the row above it (bare spawn; idle instances).")
    if Errors.count:
        write(f"{Errors.count} POST(s) outside the timed requests failed with a server error")
        write("and were retried (SQLite 'database is locked'; see the server's log).")


if __name__ == "__main__":
    main()
