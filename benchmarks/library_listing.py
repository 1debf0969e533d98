"""Benchmark: library listing and search latency against a real server, next to /healthz.

Run from the repository root with the project's virtualenv:

    .venv/bin/python benchmarks/library_listing.py [--assets 10000] [--duration 5]

It builds a throw-away site with ``--assets`` asset folders in ``alice/models``, starts
``dtaas serve`` on a free 127.0.0.1 port, measures p50/p99 of sequential requests and
requests/s under load (wrk when /usr/bin/wrk exists, else client processes), prints a
table with each endpoint's ratio to /healthz, then stops the server and deletes the site.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from server import Server

WRK = Path("/usr/bin/wrk")
STOP_TIMEOUT = 10.0
SEQUENTIAL_BUDGET = 8.0  # seconds per endpoint; slow endpoints get fewer samples
MIN_SAMPLES = 5


@dataclass(frozen=True)
class Endpoint:
    """One measured request: a label, a path with query, and how many sequential runs."""

    label: str
    path: str
    sequential: int


@dataclass(frozen=True)
class Result:
    label: str
    samples: int
    p50_ms: float
    p99_ms: float
    requests_per_second: float
    errors: int


def write(line: str = "") -> None:
    """Print a line of the report (the project forbids print() for logging's sake)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def make_assets(files: Path, count: int) -> None:
    """``count`` asset folders, each with a description and one model file."""
    models = files / "alice" / "models"
    models.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        asset = models / f"asset-{index:05d}"
        asset.mkdir()
        (asset / "description.md").write_text(f"# Asset {index}\n\nModel number {index}.\n")
        (asset / "model.txt").write_text(f"parameter k = {index};\n")


def sequential(client: httpx.Client, endpoint: Endpoint) -> list[float]:
    """Milliseconds of up to ``endpoint.sequential`` requests one after another.

    Stops early after SEQUENTIAL_BUDGET seconds, once MIN_SAMPLES were taken.
    """
    client.get(endpoint.path).raise_for_status()  # warm-up, not counted
    timings: list[float] = []
    deadline = time.monotonic() + SEQUENTIAL_BUDGET
    while len(timings) < endpoint.sequential and (
        len(timings) < MIN_SAMPLES or time.monotonic() < deadline
    ):
        started = time.perf_counter()
        client.get(endpoint.path).raise_for_status()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def load_with_wrk(
    base_url: str, endpoint: Endpoint, token: str, *, duration: int
) -> tuple[float, int]:
    """Requests/s and failed requests (non-2xx, socket errors, timeouts) under wrk."""
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "auth.lua"
        script.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        command = [str(WRK), "-t2", "-c16", f"-d{duration}s", "--timeout", "10s"]
        result = subprocess.run(  # noqa: S603  # a fixed binary with our own arguments
            [*command, "-s", str(script), base_url + endpoint.path],
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=True,
        )
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if rate is None:
        raise SystemExit(f"cannot read wrk's output:\n{result.stdout}")
    failures = re.findall(
        r"(?:Non-2xx or 3xx responses:|connect|read|write|timeout) (\d+)", result.stdout
    )
    return float(rate.group(1)), sum(int(count) for count in failures)


def _client_process(
    base_url: str,
    path: str,
    token: str,
    until: float,
    counts: multiprocessing.Queue[tuple[int, int]],
) -> None:
    done = failed = 0
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, trust_env=False, timeout=10) as client:
        while time.monotonic() < until:
            try:
                ok = client.get(path).is_success
            except httpx.TransportError:
                ok = False
            done += ok
            failed += not ok
    counts.put((done, failed))


def load_with_processes(
    base_url: str, endpoint: Endpoint, token: str, *, duration: int
) -> tuple[float, int]:
    """Requests/s and failed requests with 8 client processes, when wrk is missing."""
    workers = 8
    counts: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()
    until = time.monotonic() + duration
    processes = [
        multiprocessing.Process(
            target=_client_process, args=(base_url, endpoint.path, token, until, counts)
        )
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    results = [counts.get(timeout=duration + 30) for _ in processes]
    for process in processes:
        process.join(timeout=STOP_TIMEOUT)
    return sum(done for done, _ in results) / duration, sum(failed for _, failed in results)


def report(results: list[Result], *, assets: int, load_tool: str) -> None:
    baseline = results[0]
    write()
    write(f"{assets} assets in alice/models; load by {load_tool}")
    header = (
        f"{'endpoint':<22}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>7}"
        f"{'p50 x':>8}{'req/s x':>9}"
    )
    write(header)
    write("-" * len(header))
    for result in results:
        write(
            f"{result.label:<22}{result.samples:>5}{result.p50_ms:>9.1f}{result.p99_ms:>9.1f}"
            f"{result.requests_per_second:>9.1f}{result.errors:>7}"
            f"{result.p50_ms / baseline.p50_ms:>8.1f}"
            f"{result.requests_per_second / baseline.requests_per_second:>9.3f}"
        )
    write()
    write("n: sequential samples; p50/p99: their latency percentiles; req/s and errors:")
    write("under load; x columns: relative to /healthz (p50 x: slower by; req/s x: share of).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--assets", type=int, default=10_000, help="asset folders to create")
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per endpoint")
    parser.add_argument("--requests", type=int, default=100, help="sequential requests")
    options = parser.parse_args()
    last = options.assets - 1
    endpoints = [
        Endpoint("/healthz (baseline)", "/healthz", options.requests),
        Endpoint("list 200 of all", "/api/v1/library/entries?path=alice/models", options.requests),
        Endpoint("list small folder", "/api/v1/library/entries?path=alice/data", options.requests),
        Endpoint("stat one asset", "/api/v1/library/stat?path=alice/models/asset-00000", 100),
        Endpoint(
            "search name, one hit",
            f"/api/v1/library/search?q=asset-{last:05d}&path=alice/models",
            max(10, options.requests // 5),
        ),
        Endpoint(
            "search text, one hit",
            f"/api/v1/library/search?q=k+%3D+{last}%3B&mode=text&path=alice/models",
            max(5, options.requests // 20),
        ),
    ]
    with tempfile.TemporaryDirectory(prefix="dtaas-bench-") as scratch:
        site = Path(scratch)
        started = time.perf_counter()
        make_assets(site / "data" / "files", options.assets)
        write(f"created {options.assets} assets in {time.perf_counter() - started:.1f} s")
        server = Server(site)
        password = server.start({})["alice"]
        base_url = server.url
        try:
            login = {"username": "alice", "password": password, "token_name": "bench"}
            created = httpx.post(f"{base_url}/api/v1/auth/token", json=login, trust_env=False)
            created.raise_for_status()
            token = created.json()["token"]
            use_wrk = WRK.exists()
            load = load_with_wrk if use_wrk else load_with_processes
            results = []
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(
                base_url=base_url, headers=headers, trust_env=False, timeout=60
            ) as client:
                for endpoint in endpoints:
                    write(f"measuring {endpoint.label} ...")
                    timings = sequential(client, endpoint)
                    rate, errors = load(base_url, endpoint, token, duration=options.duration)
                    p99 = statistics.quantiles(timings, n=100, method="inclusive")[98]
                    median = statistics.median(timings)
                    results.append(Result(endpoint.label, len(timings), median, p99, rate, errors))
        finally:
            server.stop()
    report(results, assets=options.assets, load_tool="wrk -t2 -c16" if use_wrk else "8 processes")


if __name__ == "__main__":
    main()
