"""Uploads refused midway through a stream, over a real socket: what had arrived goes.

The app runs on a loopback port (``tests/live.py``), so the body reaches it in pieces as
it is sent, as in production; each test watches the server's disk while the upload is
under way, to see the partial file exist and then go.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dtaas.client import Client
from dtaas.errors import QuotaExceeded
from dtaas.lifecycle import snapshots
from tests.accounting.conftest import KIB, MIB
from tests.execution.processes import wait_until
from tests.live import LiveServer, run_live_server

ADVICE = (
    "Delete files, instances or snapshots you no longer need (`dtaas storage` shows what "
    "takes the space), or ask an administrator for a larger quota."
)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    """A site whose user alice has a quota of 1 MiB."""
    with run_live_server(tmp_path / "site") as server:
        server.add_user("alice")
        with server.client_for("root") as root:
            root.set_quota(username="alice", quota_mb=1)
        yield server


def sizes_of_partials(folder: Path, prefix: str) -> list[int] | None:
    """Sizes of the non-empty work files named ``prefix...`` in ``folder``, if any."""
    sizes = []
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.name.startswith(prefix):
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # removed while we looked
                continue
            if size > 0:
                sizes.append(size)
    return sizes or None


def test_a_library_upload_over_the_quota_stops_midway_and_leaves_nothing(
    live: LiveServer, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * 3 * MIB)
    data = live.files_dir / "alice" / "data"
    partials: list[int] = []

    def progress(done: int, total: int | None) -> None:
        del total
        if done >= 512 * KIB and not partials:
            partials.extend(
                wait_until(
                    lambda: sizes_of_partials(data, ".dtaas-"),
                    timeout=10,
                    message="the partial upload on the server's disk",
                )
            )

    with live.client_for("alice") as client, pytest.raises(QuotaExceeded) as refused:
        client.upload(folder="alice/data", files=[big], progress=progress)

    assert refused.value.message == (
        f"Uploading would pass your storage quota: 0 bytes of 1.0 MiB used, 1.0 MiB free. {ADVICE}"
    )
    assert len(partials) == 1 and 0 < partials[0] <= MIB
    assert list(data.iterdir()) == []
    with live.client_for("alice") as client:
        assert client.get_storage().used_bytes == 0


def test_a_snapshot_upload_over_the_quota_stops_midway_and_leaves_nothing(
    live: LiveServer,
) -> None:
    folder = snapshots.snapshots_dir(live.settings)
    partials: list[int] = []

    def body() -> Iterator[bytes]:
        # No Content-Length: the quota is found while the body streams in.
        for sent in range(48):
            yield b"z" * 64 * KIB
            if sent == 8:
                partials.extend(
                    wait_until(
                        lambda: sizes_of_partials(folder, ".upload-"),
                        timeout=10,
                        message="the partial snapshot on the server's disk",
                    )
                )

    response = httpx.post(
        f"{live.url}/api/v1/snapshots/upload",
        content=body(),
        headers={"Authorization": f"Bearer {live.token_for('alice')}"},
        timeout=30,
    )

    assert response.status_code == 403, response.text
    assert response.json()["detail"] == [
        {
            "type": "quota_exceeded",
            "msg": "Uploading this snapshot would pass your storage quota: 0 bytes of 1.0 MiB "
            f"used, 1.0 MiB free. {ADVICE}",
            "loc": ["body"],
        }
    ]
    assert len(partials) == 1 and 0 < partials[0] <= MIB
    assert list(folder.iterdir()) == []
    with Client(live.url, token=live.token_for("alice")) as client:
        assert client.list_snapshots() == []
