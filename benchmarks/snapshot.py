"""Benchmark: snapshot and re-spawn of a 100 MB instance, against ``tar | zstd`` of its folder.

Run from the repository root with the project's virtualenv:

    .venv/bin/python benchmarks/snapshot.py [--megabytes 100] [--repeat 5]

It starts ``dtaas serve`` on a free 127.0.0.1 port in a throw-away site, writes a DT whose
folder holds ``--megabytes`` of data (many small files, a CSV, a float array, random
bytes) and creates an instance of it. Then, ``--repeat`` times, in the same run:

1. **snapshot**: POST ``/api/v1/instances/{id}/snapshots`` until GET says ``ready``
   (the supervisor packs the working copy: tar, zstd level 3, sha256, fsync, rename);
2. **tar | zstd**: ``tar -cf - dt | zstd -T0 -3`` of the same working copy to a file (and
   with ``-T1``, one compression thread as the platform uses);
3. **re-spawn**: POST ``/api/v1/snapshots/{id}/respawn`` until it answers 201 (the file's
   sha256 checked, the working copy unpacked safely, the restore job queued);
4. **zstd -d | tar -x** of the baseline's file into a fresh folder.

The medians (with min and max) are printed in seconds and MB/s (MB = 10^6 bytes of the
working copy), with the platform's time as a ratio to the baseline's. The platform's own pieces
(``archive.pack``, ``archive.verify`` + ``archive.unpack``) are timed in this process on the
same folder, to show where its time goes. Needs the ``zstd`` command (Debian: ``apt-get
install zstd``). Everything is stopped and the site deleted at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from server import Server, executable, wait_until

from dtaas.lifecycle import archive

STEP_TIMEOUT = 600.0  # one snapshot or re-spawn of the whole folder
# How often a snapshot's state is asked for while timing it: often enough to be precise
# to a few percent, rarely enough not to slow the server's packing thread (one GIL).
EXECUTE = '#!/bin/sh\necho "execute, restore=${DTAAS_RESTORE:-0}"\n'
API = "/api/v1"
MB = 1_000_000
SMALL_FILE_BYTES = (1_000, 16_000)
# Shares of the data: small files (configuration, logs, per-run results), a CSV of
# readings, a raw float64 signal, random bytes (already-compressed media, checkpoints).
SHARES = {"small": 0.2, "csv": 0.3, "floats": 0.25, "random": 0.25}


def write(line: str = "") -> None:
    """Print a line of the report (the project forbids print() for logging's sake)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- the data -----------------------------------------------------------------------------


def _text(rng: random.Random, size: int) -> bytes:
    """A log-like text: repetitive words, changing numbers."""
    lines: list[str] = []
    length = 0
    while length < size:
        line = f"t={len(lines) * 0.01:.2f} step={len(lines)} state=ok x={rng.gauss(0, 1):.6f}\n"
        lines.append(line)
        length += len(line)
    return "".join(lines).encode()[:size]


def write_data(folder: Path, total: int, seed: int = 9) -> int:
    """About ``total`` bytes of a DT's data in ``folder``; returns the number of files."""
    rng = random.Random(seed)  # noqa: S311  # not a secret: the same data in every run
    budget = {kind: int(total * share) for kind, share in SHARES.items()}
    files = written = 0
    while written < budget["small"]:
        size = rng.randint(*SMALL_FILE_BYTES)
        run = folder / "runs" / f"run-{files // 100:03d}"
        run.mkdir(parents=True, exist_ok=True)
        if files % 4 == 0:  # results already compressed
            (run / f"result-{files:05d}.bin").write_bytes(rng.randbytes(size))
        else:
            (run / f"output-{files:05d}.log").write_bytes(_text(rng, size))
        files += 1
        written += size
    data = folder / "data"
    data.mkdir()
    with (data / "readings.csv").open("w") as csv:
        csv.write("step,t,x,v,temperature\n")
        step = 0
        while csv.tell() < budget["csv"]:
            csv.write(
                "".join(
                    f"{i},{i * 0.01:.2f},{rng.gauss(0, 1)!r},{rng.gauss(0, 1)!r},"
                    f"{20 + rng.random():.3f}\n"
                    for i in range(step, step + 10_000)
                )
            )
            step += 10_000
    # A slowly varying signal: the high bytes of neighbouring values repeat, the low do not.
    signal_values = array("d")
    value = 0.0
    for _ in range(budget["floats"] // 8):
        value += rng.gauss(0, 0.01)
        signal_values.append(value)
    (data / "signal.f64").write_bytes(signal_values.tobytes())
    for part in range(4):
        (data / f"frames-{part}.bin").write_bytes(rng.randbytes(budget["random"] // 4))
    return files + 6


def folder_bytes(folder: Path) -> tuple[int, int]:
    """Files and bytes below ``folder``."""
    count = size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            count += 1
            size += (Path(root) / name).lstat().st_size
    return count, size


# --- the site -----------------------------------------------------------------------------


class Site(Server):
    """A throw-away data directory and the ``dtaas serve`` process running on it."""

    def start(self) -> str:  # type: ignore[override]  # the benchmark signs in as alice
        """Start the server; returns alice's one-time demo password."""
        return super().start({"DTAAS_EMBEDDED_MQTT": "false"})["alice"]

    def twin_folder(self, name: str) -> Path:
        return self.data / "files" / "alice" / "digital_twins" / name

    def working_copy(self, instance_id: int) -> Path:
        return self.data / "instances" / str(instance_id) / "dt"


@contextlib.contextmanager
def running_site() -> Iterator[tuple[Site, httpx.Client]]:
    with tempfile.TemporaryDirectory(prefix="dtaas-bench-") as scratch:
        site = Site(Path(scratch))
        try:
            password = site.start()
            login = {"username": "alice", "password": password, "token_name": "bench"}
            created = httpx.post(f"{site.url}{API}/auth/token", json=login, trust_env=False)
            created.raise_for_status()
            headers = {"Authorization": f"Bearer {created.json()['token']}"}
            with httpx.Client(
                base_url=site.url, headers=headers, trust_env=False, timeout=STEP_TIMEOUT
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


# --- the measurements ---------------------------------------------------------------------


@dataclass
class Timings:
    """Seconds per repetition of each way of packing and unpacking."""

    rows: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, label: str, seconds: float) -> None:
        self.rows.setdefault(label, []).append(seconds)

    def median(self, label: str) -> float:
        return statistics.median(self.rows[label])


def snapshot_through_api(client: httpx.Client, instance_id: int) -> tuple[float, dict[str, Any]]:
    """Seconds from POST until the snapshot is ready, and the snapshot."""
    started = time.perf_counter()
    posted = client.post(f"{API}/instances/{instance_id}/snapshots")
    posted.raise_for_status()
    snapshot_id = posted.json()["id"]

    def settled() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"{API}/snapshots/{snapshot_id}").json()
        return body if body["state"] in ("ready", "failed") else None

    snapshot: dict[str, Any] = wait_until(settled, timeout=STEP_TIMEOUT, what="the snapshot")
    seconds = time.perf_counter() - started
    if snapshot["state"] != "ready":
        raise SystemExit(f"the snapshot failed: {snapshot['reason']}")
    return seconds, snapshot


def respawn_through_api(client: httpx.Client, snapshot_id: int) -> tuple[float, int]:
    """Seconds from POST until the re-spawned instance's working copy is there, and its id."""
    started = time.perf_counter()
    response = client.post(f"{API}/snapshots/{snapshot_id}/respawn")
    seconds = time.perf_counter() - started
    response.raise_for_status()
    return seconds, int(response.json()["id"])


def remove_instance(client: httpx.Client, instance_id: int) -> None:
    """Wait for the re-spawned instance's restore job, then delete the instance."""

    def ready() -> bool:
        state: str = client.get(f"{API}/instances/{instance_id}").json()["state"]
        return state == "ready"

    wait_until(ready, timeout=STEP_TIMEOUT, what=f"instance {instance_id} to be ready")
    client.delete(f"{API}/instances/{instance_id}").raise_for_status()


def tar_zstd(folder: Path, target: Path, threads: int = 0) -> float:
    """Seconds for ``tar -cf - dt | zstd -T<threads> -3 > target`` (0: one per core)."""
    command = (
        f"{shutil.which('tar')} -cf - -C {folder.parent} {folder.name} "
        f"| {executable('zstd', hint='Debian: apt-get install zstd')} -q -T{threads} -3 > {target}"
    )
    started = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", command], check=True)  # noqa: S603  # our own paths
    return time.perf_counter() - started


def untar_zstd(source: Path, target: Path) -> float:
    """Seconds for ``zstd -d < source | tar -x`` into the new folder ``target``."""
    target.mkdir()
    zstd = executable("zstd", hint="Debian: apt-get install zstd")
    command = f"{zstd} -q -d -c {source} | {shutil.which('tar')} -xf - -C {target}"
    started = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", command], check=True)  # noqa: S603  # our own paths
    return time.perf_counter() - started


def archive_in_process(folder: Path, scratch: Path, timings: Timings) -> None:
    """The platform's own functions on the same folder, without the API and supervisor."""
    target = scratch / "in-process.tar.zst"
    started = time.perf_counter()
    size, digest = archive.pack(folder, {"twin_path": "bench", "values": {}}, target)
    timings.add("archive.pack", time.perf_counter() - started)
    timings.sizes["archive.pack"] = size
    unpacked = scratch / "in-process"
    started = time.perf_counter()
    archive.verify(target, digest)
    archive.unpack(target, unpacked, max_bytes=10 * size + 10 * 1024**3)
    timings.add("archive.verify + unpack", time.perf_counter() - started)
    shutil.rmtree(unpacked)
    target.unlink()


def measure(site: Site, client: httpx.Client, instance_id: int, repeat: int) -> Timings:
    folder = site.working_copy(instance_id)
    scratch = site.root / "baseline"
    scratch.mkdir()
    timings = Timings()
    for round_number in range(repeat):
        write(f"round {round_number + 1} of {repeat} ...")
        # Alternate which goes first, so neither always meets a warmer page cache.
        platform_first = round_number % 2 == 0
        baseline = scratch / "dt.tar.zst"
        for turn in ("platform", "baseline") if platform_first else ("baseline", "platform"):
            if turn == "platform":
                seconds, snapshot = snapshot_through_api(client, instance_id)
                timings.add("snapshot (API)", seconds)
                timings.sizes["snapshot (API)"] = int(snapshot["size_bytes"])
                server_side = datetime.fromisoformat(snapshot["completed_at"]) - (
                    datetime.fromisoformat(snapshot["created_at"])
                )
                timings.add("  created → completed", server_side.total_seconds())
                seconds, respawned = respawn_through_api(client, int(snapshot["id"]))
                timings.add("re-spawn (API)", seconds)
                remove_instance(client, respawned)
                client.delete(f"{API}/snapshots/{snapshot['id']}").raise_for_status()
            else:
                timings.add("tar | zstd -T0 -3", tar_zstd(folder, baseline))
                timings.sizes["tar | zstd -T0 -3"] = baseline.stat().st_size
                single = scratch / "single.tar.zst"
                timings.add("tar | zstd -T1 -3", tar_zstd(folder, single, threads=1))
                single.unlink()
                unpacked = scratch / "unpacked"
                timings.add("zstd -d | tar -x", untar_zstd(baseline, unpacked))
                shutil.rmtree(unpacked)
                baseline.unlink()
        archive_in_process(folder, scratch, timings)
    shutil.rmtree(scratch)
    return timings


def report(timings: Timings, size: int, files: int, repeat: int) -> None:
    write()
    write(f"working copy: {files} files, {size / MB:.1f} MB; median of {repeat} runs each")
    write(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    header = f"{'':<28}{'p50 s':>8}{'min s':>8}{'max s':>8}{'MB/s':>8}{'x':>7}{'file MB':>9}"
    groups = [
        (
            "pack",
            "tar | zstd -T0 -3",
            ["tar | zstd -T1 -3", "snapshot (API)", "  created → completed", "archive.pack"],
        ),
        ("unpack", "zstd -d | tar -x", ["re-spawn (API)", "archive.verify + unpack"]),
    ]
    for title, base, others in groups:
        write()
        write(f"{title:<28}{header[28:]}")
        write("-" * len(header))
        for label in [base, *others]:
            seconds = timings.median(label)
            spread = f"{min(timings.rows[label]):>8.2f}{max(timings.rows[label]):>8.2f}"
            ratio = seconds / timings.median(base)
            stored = timings.sizes.get(label)
            file_mb = f"{stored / MB:>9.1f}" if stored is not None else ""
            write(
                f"{label:<28}{seconds:>8.2f}{spread}{size / MB / seconds:>8.1f}{ratio:>7.2f}"
                f"{file_mb}"
            )
    write()
    write("x: the median relative to the first row of its group (the same folder, same run).")
    write("MB/s: megabytes (10^6 bytes) of the working copy per second, at the median.")
    write("created → completed: the snapshot's own timestamps, without the API's polling.")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the server and the site are still cleaned up."""

    def exit_now(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--megabytes", type=int, default=100, help="size of the working copy")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each measurement")
    options = parser.parse_args()
    executable("zstd", hint="Debian: apt-get install zstd")

    with running_site() as (site, client):
        twin = site.twin_folder("bulk")
        write(f"writing {options.megabytes} MB of DT data ...")
        (twin / "lifecycle").mkdir(parents=True)
        (twin / "lifecycle" / "execute").write_text(EXECUTE)
        (twin / "lifecycle" / "execute").chmod(0o755)
        write_data(twin, options.megabytes * MB)
        write("creating the instance ...")
        created = client.post(f"{API}/instances", json={"twin_path": "alice/digital_twins/bulk"})
        created.raise_for_status()
        instance_id = int(created.json()["id"])
        files, size = folder_bytes(site.working_copy(instance_id))
        timings = measure(site, client, instance_id, options.repeat)
    report(timings, size, files, options.repeat)


if __name__ == "__main__":
    main()
