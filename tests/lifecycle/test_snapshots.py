"""Snapshots through the API: save a running DT, re-spawn it, and fail without losing anything.

Saving a running simulation and re-spawning it runs on the local executor and on the
session's Ray head (its save job runs beside the execute job: 1 CPU each of the head's 2);
the other tests run on the local executor, as what they check is the platform's own.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import zstandard
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.db import utcnow
from dtaas.lifecycle import archive, service, snapshots
from dtaas.lifecycle.models import Instance
from tests.lifecycle.conftest import API, bound_sessions, on_every_executor, write_twin
from tests.lifecycle.test_routes import (
    error_of,
    finish,
    new_instance,
    queue_phase,
    read_instance,
    read_job,
    read_log,
    run_phase,
    state_of,
)

Headers = dict[str, str]
EXAMPLE = (
    Path(snapshots.__file__).parents[1]
    / "library"
    / "examples"
    / "common"
    / "digital_twins"
    / "mass-spring-damper"
)
STEP = re.compile(r"^step=(\d+) t=\S+ x=(\S+) v=(\S+)$", re.MULTILINE)


@pytest.fixture(autouse=True)
def streams_on_the_test_connection(client: TestClient, session: Session) -> None:
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]


@pytest.fixture
def oscillator(settings: Settings, alice: Any) -> str:
    """alice's copy of the example DT that can be saved while it runs."""
    target = settings.resolved_files_dir / "alice" / "digital_twins" / "oscillator"
    shutil.copytree(EXAMPLE, target)
    return "alice/digital_twins/oscillator"


@pytest.fixture
def go(settings: Settings, alice: Any) -> Path:
    """The file that lets waiting scripts finish."""
    return settings.resolved_files_dir / "alice" / "data" / "go"


def take_snapshot(client: TestClient, headers: Headers, instance_id: int) -> dict[str, Any]:
    response = client.post(f"{API}/instances/{instance_id}/snapshots", headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def read_snapshot(client: TestClient, headers: Headers, snapshot_id: int) -> dict[str, Any]:
    response = client.get(f"{API}/snapshots/{snapshot_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def settled(
    driver: Any, client: TestClient, headers: Headers, snapshot_id: int, timeout: float = 30.0
) -> dict[str, Any]:
    """Tick until the snapshot is ready or failed."""
    snapshot: dict[str, Any] = driver.run_until(
        lambda: (
            read_snapshot(client, headers, snapshot_id)
            if read_snapshot(client, headers, snapshot_id)["state"] in ("ready", "failed")
            else None
        ),
        timeout=timeout,
        message=f"snapshot {snapshot_id} settling",
    )
    return snapshot


def steps_of(log: str) -> dict[int, tuple[str, str]]:
    return {int(step): (x, v) for step, x, v in STEP.findall(log)}


def listed(settings: Settings) -> list[str]:
    folder = snapshots.snapshots_dir(settings)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --- saving and re-spawning -------------------------------------------------------------------


@on_every_executor
def test_a_running_simulation_is_saved_and_respawned_where_it_was(
    client, driver, settings, as_alice, oscillator, executor
):
    instance_id = new_instance(
        client, as_alice, oscillator, values={"steps": 100000, "step_delay": 0.005}
    )
    execute = queue_phase(client, as_alice, instance_id, "execute")
    driver.run_until(  # a Ray job takes several seconds to start on a busy machine
        lambda: len(steps_of(read_log(client, as_alice, execute))) > 20,
        timeout=60,
        message="the simulation running",
    )

    taken = take_snapshot(client, as_alice, instance_id)["id"]
    snapshot = settled(driver, client, as_alice, taken, timeout=60)  # the save is a job, too
    still = read_job(client, as_alice, execute)["state"]
    saved = json.loads(
        (
            service.instance_dir(settings, instance_id) / "dt" / ".dtaas-state" / "state.json"
        ).read_text()
    )
    respawned = client.post(f"{API}/snapshots/{snapshot['id']}/respawn", headers=as_alice)
    assert respawned.status_code == 201, respawned.text
    new_id = respawned.json()["id"]
    restore = read_instance(client, as_alice, new_id)["jobs"][0]
    driver.run_until(
        lambda: len(steps_of(read_log(client, as_alice, restore["id"]))) > 20,
        timeout=60,
        message="the re-spawned simulation running",
    )
    for job_id in (execute, restore["id"]):
        client.post(f"{API}/jobs/{job_id}/cancel", headers=as_alice)
        finish(driver, client, as_alice, job_id)

    assert snapshot["state"] == "ready", snapshot
    assert still == "running"  # saving did not stop the instance
    assert restore["phase"] == "execute" and restore["provenance"]["restore"] is True
    assert respawned.json()["executor"] == executor  # re-spawned where it was saved
    original, resumed = (steps_of(read_log(client, as_alice, j)) for j in (execute, restore["id"]))
    first = min(resumed)
    assert first == saved["step"] + 1
    assert read_log(client, as_alice, restore["id"]).startswith(f"restored at step={saved['step']}")
    compared = [step for step in resumed if step in original]
    assert len(compared) > 10
    assert all(resumed[step] == original[step] for step in compared)
    assert snapshot["details"]["twin_path"] == oscillator
    assert snapshot["details"]["values"]["steps"] == 100000
    assert [job["phase"] for job in snapshot["details"]["jobs"]] == ["execute", "save"]


def test_a_dt_without_save_script_is_packed_as_it_is(client, driver, settings, as_alice):
    twin = write_twin(
        settings, "alice/digital_twins/plain", {"execute": "#!/bin/sh\necho out > out.txt\n"}
    )
    instance_id = new_instance(client, as_alice, twin, name="plain one")
    finish(driver, client, as_alice, queue_phase(client, as_alice, instance_id, "execute"))

    snapshot = settled(driver, client, as_alice, take_snapshot(client, as_alice, instance_id)["id"])
    path = snapshots.snapshot_file(settings, snapshot["id"])

    assert snapshot["state"] == "ready"
    assert snapshot["save_job_id"] is None
    assert snapshot["size_bytes"] == path.stat().st_size
    assert snapshot["sha256"] == archive.checksum(path)
    assert archive.read_metadata(path)["instance"] == {
        "id": instance_id,
        "name": "plain one",
        "state": "ready",
    }
    download = client.get(f"{API}/snapshots/{snapshot['id']}/download", headers=as_alice)
    assert download.status_code == 200
    assert download.headers["x-checksum-sha256"] == snapshot["sha256"]
    assert download.content == path.read_bytes()
    assert listed(settings) == [f"{snapshot['id']}.tar.zst"]


# --- failures lose nothing ------------------------------------------------------------------------


def test_a_failing_save_script_fails_the_snapshot_and_leaves_the_instance_running(
    client, driver, settings, as_alice
):
    twin = write_twin(
        settings,
        "alice/digital_twins/bad-save",
        {
            "execute": "#!/bin/sh\necho ready\nexec sleep 300\n",
            "save": "#!/bin/sh\necho 'disk says no' >&2\nexit 4\n",
        },
    )
    instance_id = new_instance(client, as_alice, twin)
    execute = queue_phase(client, as_alice, instance_id, "execute")
    driver.run_until(lambda: read_job(client, as_alice, execute)["state"] == "running")

    snapshot = settled(driver, client, as_alice, take_snapshot(client, as_alice, instance_id)["id"])
    running = read_job(client, as_alice, execute)["state"]
    client.post(f"{API}/jobs/{execute}/cancel", headers=as_alice)
    finish(driver, client, as_alice, execute)

    assert snapshot["state"] == "failed"
    assert snapshot["reason"] == (
        "the save script failed: exited with status 4; see the log of job "
        f"{snapshot['save_job_id']}"
    )
    assert read_log(client, as_alice, snapshot["save_job_id"], "stderr") == "disk says no\n"
    assert running == "running"
    assert listed(settings) == []
    respawn = client.post(f"{API}/snapshots/{snapshot['id']}/respawn", headers=as_alice)
    assert respawn.status_code == 409
    assert error_of(respawn)["msg"] == (
        f"Snapshot {snapshot['id']} is failed, so it cannot be re-spawned; take a new one."
    )


def test_a_hanging_save_script_is_stopped_at_its_timeout(client, make_driver, settings, as_alice):
    driver = make_driver(snapshot_save_timeout_seconds=1)
    twin = write_twin(
        settings,
        "alice/digital_twins/slow-save",
        {"execute": "#!/bin/sh\necho ok\n", "save": "#!/bin/sh\nexec sleep 300\n"},
    )
    instance_id = new_instance(client, as_alice, twin)

    snapshot = settled(driver, client, as_alice, take_snapshot(client, as_alice, instance_id)["id"])

    assert snapshot["state"] == "failed"
    assert "the wall-time limit of 1 s was reached" in snapshot["reason"]
    assert state_of(client, as_alice, instance_id) == "ready"
    assert listed(settings) == []


def test_a_tampered_snapshot_is_refused_on_respawn_and_creates_nothing(
    client, driver, settings, as_alice, session
):
    twin = write_twin(settings, "alice/digital_twins/plain", {"execute": "#!/bin/sh\necho hi\n"})
    instance_id = new_instance(client, as_alice, twin)
    snapshot = settled(driver, client, as_alice, take_snapshot(client, as_alice, instance_id)["id"])
    path = snapshots.snapshot_file(settings, snapshot["id"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    before = client.get(f"{API}/instances", headers=as_alice).json()

    response = client.post(f"{API}/snapshots/{snapshot['id']}/respawn", headers=as_alice)

    assert response.status_code == 409
    assert "was changed or damaged" in error_of(response)["msg"]
    assert client.get(f"{API}/instances", headers=as_alice).json() == before
    assert sorted(p.name for p in service.instance_dir(settings, 0).parent.iterdir()) == [
        str(instance_id)
    ]


def test_clean_and_delete_wait_for_a_snapshot_being_taken(client, driver, settings, as_alice, go):
    twin = write_twin(
        settings,
        "alice/digital_twins/slow-saver",
        {
            "execute": "#!/bin/sh\necho ok\n",
            "save": "#!/bin/sh\nwhile [ ! -e /workspace/data/go ]; do sleep 0.05; done\n",
        },
    )
    instance_id = new_instance(client, as_alice, twin)
    snapshot_id = take_snapshot(client, as_alice, instance_id)["id"]

    clean = client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)
    delete = client.delete(f"{API}/instances/{instance_id}", headers=as_alice)
    again = client.post(f"{API}/instances/{instance_id}/snapshots", headers=as_alice)
    go.touch()
    snapshot = settled(driver, client, as_alice, snapshot_id)

    assert (clean.status_code, delete.status_code, again.status_code) == (409, 409, 409)
    assert error_of(clean)["msg"] == (
        f"Snapshot {snapshot_id} of instance {instance_id} is being taken, so the instance "
        "cannot be cleaned now; wait until the snapshot is ready or failed."
    )
    assert snapshot["state"] == "ready"
    assert client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice).status_code == 202


def test_save_and_restore_are_not_phases_to_run_by_hand(client, settings, as_alice, oscillator):
    instance_id = new_instance(client, as_alice, oscillator)

    response = run_phase(client, as_alice, instance_id, "save")

    assert response.status_code == 422
    assert error_of(response)["msg"] == (
        f"save is not run on its own: it runs by POST /instances/{instance_id}/snapshots."
    )


def test_a_cleaned_instance_cannot_be_saved(client, driver, settings, as_alice):
    twin = write_twin(settings, "alice/digital_twins/plain", {"execute": "#!/bin/sh\necho hi\n"})
    instance_id = new_instance(client, as_alice, twin)
    client.post(f"{API}/instances/{instance_id}/clean", headers=as_alice)

    response = client.post(f"{API}/instances/{instance_id}/snapshots", headers=as_alice)

    assert response.status_code == 409
    assert error_of(response)["msg"] == (
        f"Instance {instance_id} is cleaned, so it cannot be saved; an instance can be saved "
        "while it is ready, busy or terminated."
    )


def test_an_instance_on_ray_without_a_shared_directory_cannot_be_saved(
    client, session, settings, as_alice
):
    """Its jobs work in uploaded copies on the Ray nodes: the platform would pack a stale
    working copy and never see the save script's state, so it refuses, saying why."""
    twin = write_twin(settings, "alice/digital_twins/plain", {"execute": "#!/bin/sh\necho hi\n"})
    instance_id = new_instance(client, as_alice, twin)
    session.execute(update(Instance).where(Instance.id == instance_id).values(executor="ray"))
    assert settings.ray_shared_dir is None

    response = client.post(f"{API}/instances/{instance_id}/snapshots", headers=as_alice)

    assert response.status_code == 409
    assert "DTAAS_RAY_SHARED_DIR" in error_of(response)["msg"]
    assert client.get(f"{API}/instances/{instance_id}/snapshots", headers=as_alice).json() == []
    assert listed(settings) == []


# --- upload and download --------------------------------------------------------------------------


def zstd_tar(members: dict[str, bytes], metadata: dict[str, Any] | None = None) -> bytes:
    raw = io.BytesIO()
    document = json.dumps(
        metadata if metadata is not None else {"format": 1, "twin_path": "x", "values": {}}
    ).encode()
    with (
        zstandard.ZstdCompressor().stream_writer(raw, closefd=False) as compressed,
        tarfile.open(fileobj=compressed, mode="w|") as tar,
    ):
        for name, data in {"snapshot.json": document, **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def upload(client: TestClient, headers: Headers, content: bytes, **extra: str) -> Any:
    return client.post(
        f"{API}/snapshots/upload",
        content=content,
        headers={**headers, "Content-Type": "application/octet-stream", **extra},
    )


def test_a_downloaded_snapshot_uploads_and_respawns(client, driver, settings, as_alice, as_bob):
    twin = write_twin(
        settings,
        "alice/digital_twins/plain",
        {"execute": "#!/bin/sh\ncat note.txt\n"},
        {"note.txt": "kept\n"},
    )
    instance_id = new_instance(client, as_alice, twin)
    snapshot = settled(driver, client, as_alice, take_snapshot(client, as_alice, instance_id)["id"])
    content = client.get(f"{API}/snapshots/{snapshot['id']}/download", headers=as_alice).content

    uploaded = upload(client, as_bob, content, **{"X-Checksum-Sha256": snapshot["sha256"]})
    assert uploaded.status_code == 201, uploaded.text
    respawned = client.post(f"{API}/snapshots/{uploaded.json()['id']}/respawn", headers=as_bob)
    assert respawned.status_code == 201, respawned.text
    job = read_instance(client, as_bob, respawned.json()["id"])["jobs"][0]
    finish(driver, client, as_bob, job["id"])

    assert uploaded.json()["uploaded"] is True
    assert uploaded.json()["sha256"] == snapshot["sha256"]
    assert read_log(client, as_bob, job["id"]) == "kept\n"
    assert client.get(f"{API}/snapshots/{snapshot['id']}", headers=as_bob).status_code == 404


@pytest.mark.parametrize(
    ("case", "content", "message"),
    [
        ("garbage", b"not an archive at all", "not a valid archive"),
        ("escape", zstd_tar({"dt/../../evil": b"x"}), "unsafe member"),
        ("absolute", zstd_tar({"/etc/evil": b"x"}), "outside dt/"),
        ("outside", zstd_tar({"other/file": b"x"}), "outside dt/"),
        ("no-metadata", zstd_tar({}, metadata={"format": 9}), "not a dtaas snapshot"),
    ],
)
def test_an_unusable_upload_is_refused_and_leaves_nothing(
    client, settings, as_alice, case, content, message
):
    response = upload(client, as_alice, content)

    assert response.status_code == 422, response.text
    assert message in error_of(response)["msg"]
    assert client.get(f"{API}/snapshots", headers=as_alice).json() == []
    assert listed(settings) == []
    assert not (settings.data_dir / "evil").exists()


def test_an_upload_with_the_wrong_checksum_is_refused(client, settings, as_alice):
    response = upload(client, as_alice, zstd_tar({"dt/a": b"a"}), **{"X-Checksum-Sha256": "0" * 64})

    assert response.status_code == 422
    assert error_of(response)["msg"].startswith("The file's sha256 is ")
    assert listed(settings) == []


# --- periodic snapshots ---------------------------------------------------------------------------


def test_periodic_snapshots_keep_the_last_ones(client, driver, session, settings, as_alice, go):
    twin = write_twin(
        settings,
        "alice/digital_twins/long",
        {"execute": "#!/bin/sh\nwhile [ ! -e /workspace/data/go ]; do sleep 0.05; done\n"},
    )
    instance_id = new_instance(client, as_alice, twin)
    patched = client.patch(
        f"{API}/instances/{instance_id}",
        json={"auto_snapshot_minutes": 5, "auto_snapshot_keep": 2},
        headers=as_alice,
    )
    execute = queue_phase(client, as_alice, instance_id, "execute")
    driver.run_until(lambda: read_job(client, as_alice, execute)["state"] == "running")
    taken = []
    for _ in range(3):
        # Five minutes pass: the instance last changed, or was last saved, that long ago.
        session.execute(
            update(Instance)
            .where(Instance.id == instance_id)
            .values(updated_at=utcnow() - timedelta(minutes=6))
        )
        session.execute(
            update(snapshots.Snapshot)
            .where(snapshots.Snapshot.instance_id == instance_id)
            .values(created_at=utcnow() - timedelta(minutes=6))
        )
        driver.tick()
        found = client.get(f"{API}/instances/{instance_id}/snapshots", headers=as_alice).json()
        taken.append(found[0]["id"])
        settled(driver, client, as_alice, found[0]["id"])
    go.touch()
    finish(driver, client, as_alice, execute)
    left = client.get(f"{API}/instances/{instance_id}/snapshots", headers=as_alice).json()

    assert patched.status_code == 200 and patched.json()["auto_snapshot_minutes"] == 5
    assert len(set(taken)) == 3
    assert [s["id"] for s in left] == taken[:0:-1]
    assert all(s["auto"] for s in left)
    assert listed(settings) == sorted(f"{i}.tar.zst" for i in taken[1:])
