"""Quotas enforced where bytes are stored: library writes, uploads and copies, snapshots.

Each refusal answers 403 ``quota_exceeded`` with a message that says how the quota stands
and what to do, and leaves nothing behind. (Uploads refused midway through a stream, over
a real socket: ``test_streamed_uploads.py``.)
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.accounting import service as accounting
from dtaas.config import Settings
from dtaas.library import service as library_service
from dtaas.lifecycle import service as lifecycle
from dtaas.lifecycle import snapshots
from dtaas.lifecycle.models import Instance, SnapshotState
from dtaas.security.models import User
from tests.accounting.conftest import EXECUTE, KIB, MIB, Headers, fill
from tests.factories import make_principal
from tests.library.support import error_of, leftovers, upload, url, zip_bytes
from tests.lifecycle.conftest import bound_sessions

API = "/api/v1"
ADVICE = (
    "Delete files, instances or snapshots you no longer need (`dtaas storage` shows what "
    "takes the space), or ask an administrator for a larger quota."
)


def refusal(response: Any, loc: list[str | int]) -> str:
    """The message of a quota refusal, after checking its status, type and loc."""
    assert response.status_code == 403, response.text
    error = error_of(response)
    assert (error["type"], error["loc"]) == ("quota_exceeded", loc)
    message: str = error["msg"]
    return message


def storage(client: TestClient, headers: Headers) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"{API}/accounting/storage", headers=headers).json()
    return body


def put_text(client: TestClient, headers: Headers, path: str, content: bytes, **extra: str) -> Any:
    return client.put(url("file", path=path), content=content, headers={**headers, **extra})


# --- library ------------------------------------------------------------------------------------


def test_saving_a_file_that_does_not_fit_is_refused_and_one_that_fits_is_counted(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    fill(library / "data" / "x.bin", 1000 * KIB)
    set_quota("alice", 1)

    refused = put_text(client, as_alice, "alice/data/notes.txt", b"n" * 30 * KIB)
    saved = put_text(client, as_alice, "alice/data/notes.txt", b"n" * 20 * KIB)

    assert refusal(refused, ["body"]) == (
        "Saving this file would pass your storage quota: 1000.0 KiB of 1.0 MiB used, "
        f"24.0 KiB free, 30.0 KiB needed. {ADVICE}"
    )
    assert saved.status_code == 200, saved.text
    assert (library / "data" / "notes.txt").stat().st_size == 20 * KIB
    assert storage(client, as_alice)["library_bytes"] == 1020 * KIB


def test_replacing_a_file_counts_only_what_it_grows(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    fill(library / "data" / "x.bin", 1000 * KIB)
    fill(library / "data" / "notes.txt", 20 * KIB)
    set_quota("alice", 1)
    etag = client.get(url("stat", path="alice/data/notes.txt"), headers=as_alice).json()["etag"]

    grown = put_text(
        client, as_alice, "alice/data/notes.txt", b"m" * 24 * KIB, **{"If-Match": etag}
    )
    etag = grown.json()["etag"]
    too_big = put_text(
        client, as_alice, "alice/data/notes.txt", b"m" * 25 * KIB, **{"If-Match": etag}
    )

    assert grown.status_code == 200, grown.text
    assert refusal(too_big, ["body"]).startswith(
        "Saving this file would pass your storage quota: 1.0 MiB of 1.0 MiB used, 0 bytes "
        "free, 1.0 KiB needed."
    )
    assert (library / "data" / "notes.txt").read_bytes() == b"m" * 24 * KIB


def test_an_upload_that_does_not_fit_is_refused_and_leaves_nothing(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    set_quota("alice", 1)

    response = upload(
        client, as_alice, "alice/data", [("small.bin", b"s" * 100), ("big.bin", b"b" * MIB)]
    )

    assert refusal(response, ["files"]) == (
        f"Uploading would pass your storage quota: 0 bytes of 1.0 MiB used, 1.0 MiB free. {ADVICE}"
    )
    assert sorted(path.name for path in (library / "data").iterdir()) == []
    assert leftovers(library) == []
    assert storage(client, as_alice)["used_bytes"] == 0


def test_an_upload_that_fits_is_stored_and_counted(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    set_quota("alice", 1)

    response = upload(client, as_alice, "alice/data", [("a.bin", b"a" * 600 * KIB)])
    second = upload(client, as_alice, "alice/data", [("b.bin", b"b" * 600 * KIB)])

    assert response.status_code == 201, response.text
    assert (library / "data" / "a.bin").stat().st_size == 600 * KIB
    # The first upload's bytes count at once, without waiting for the next measurement.
    assert refusal(second, ["files"]).startswith(
        "Uploading would pass your storage quota: 600.0 KiB of 1.0 MiB used, 424.0 KiB free."
    )
    assert not (library / "data" / "b.bin").exists()


def test_an_upload_replacing_a_file_counts_only_what_it_grows(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    fill(library / "data" / "model.bin", 900 * KIB)
    set_quota("alice", 1)

    response = upload(
        client, as_alice, "alice/data", [("model.bin", b"v" * 1000 * KIB)], overwrite=True
    )

    assert response.status_code == 201, response.text
    assert (library / "data" / "model.bin").read_bytes() == b"v" * 1000 * KIB


def test_a_zip_that_would_unpack_over_the_quota_is_refused_before_unpacking(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    set_quota("alice", 1)
    # Two letters at random: deflate packs them about 6:1, so the zip itself fits.
    rng = random.Random(9)
    content = bytes(rng.choice(b"ab") for _ in range(2 * MIB))
    archive = zip_bytes({"results/levels.txt": content})
    assert len(archive) < MIB

    response = upload(client, as_alice, "alice/data", [("run.zip", archive)], extract=True)

    assert refusal(response, ["files"]) == (
        "Unpacking this zip would pass your storage quota: 0 bytes of 1.0 MiB used, "
        f"1.0 MiB free, 2.0 MiB needed. {ADVICE}"
    )
    assert list((library / "data").iterdir()) == []


def test_copying_from_common_into_a_full_library_is_refused(
    client: TestClient, as_alice: Headers, settings: Settings, library: Path, set_quota
):
    fill(settings.resolved_files_dir / "common" / "data" / "big.bin", 2 * MIB)
    set_quota("alice", 1)

    response = client.post(
        f"{API}/library/copy",
        json={"source": "common/data/big.bin", "destination": "alice/data/big.bin"},
        headers=as_alice,
    )

    assert refusal(response, []) == (
        "Copying this into your library would pass your storage quota: 0 bytes of 1.0 MiB "
        f"used, 1.0 MiB free, 2.0 MiB needed. {ADVICE}"
    )
    assert list((library / "data").iterdir()) == []
    assert leftovers(library) == []


def test_deleting_frees_space_for_the_next_upload_at_once(
    client: TestClient, as_alice: Headers, library: Path, set_quota
):
    fill(library / "data" / "old.bin", 1000 * KIB)
    set_quota("alice", 1)
    refused = upload(client, as_alice, "alice/data", [("new.bin", b"n" * 100 * KIB)])

    deleted = client.delete(url("entries", path="alice/data/old.bin"), headers=as_alice)
    stored = upload(client, as_alice, "alice/data", [("new.bin", b"n" * 100 * KIB)])

    assert refused.status_code == 403
    assert deleted.status_code == 204
    assert stored.status_code == 201, stored.text
    assert storage(client, as_alice)["library_bytes"] == 100 * KIB


def test_admins_writing_common_count_to_nobody_but_their_own_library_counts(
    client: TestClient, as_admin: Headers, settings: Settings, admin: User, set_quota
):
    set_quota(admin.username, 0)

    shared = upload(client, as_admin, "common/data", [("shared.csv", b"c" * 100 * KIB)])
    own = upload(client, as_admin, f"{admin.username}/data", [("mine.csv", b"c" * 100)])
    moved = client.post(
        f"{API}/library/move",
        json={"source": "common/data/shared.csv", "destination": f"{admin.username}/data/s.csv"},
        headers=as_admin,
    )

    assert shared.status_code == 201, shared.text
    assert (settings.resolved_files_dir / "common" / "data" / "shared.csv").is_file()
    assert storage(client, as_admin)["used_bytes"] == 0
    assert refusal(own, ["files"]).startswith(
        "Uploading would pass your storage quota: 0 bytes of 0 bytes used, 0 bytes free."
    )
    assert refusal(moved, []).startswith(
        "Moving this into your library would pass your storage quota: 0 bytes of 0 bytes "
        "used, 0 bytes free, 100.0 KiB needed."
    )
    assert (settings.resolved_files_dir / "common" / "data" / "shared.csv").is_file()


def test_without_a_quota_writes_are_never_refused(
    client: TestClient, as_alice: Headers, library: Path
):
    response = upload(client, as_alice, "alice/data", [("big.bin", b"b" * 3 * MIB)])

    assert response.status_code == 201, response.text
    assert storage(client, as_alice)["library_bytes"] == 3 * MIB


# --- snapshots ----------------------------------------------------------------------------------


def used_by_the_instance(settings: Settings, instance: Instance) -> int:
    """What alice stores with just the tiny DT and its instance."""
    return len(EXECUTE) + library_service.tree_bytes(lifecycle.instance_dir(settings, instance.id))


def leave_free(
    settings: Settings, instance: Instance, library: Path, free: int, *, snapshots_bytes: int = 0
) -> None:
    """Fill alice's library until ``free`` bytes of a 1 MiB quota are left."""
    used = used_by_the_instance(settings, instance) + snapshots_bytes
    fill(library / "data" / "filler.bin", MIB - used - free)
    accounting.folder_sizes.clear()  # written behind the platform's back: measure again


def test_a_snapshot_with_full_storage_is_refused_before_it_starts(
    api: TestClient,
    as_alice: Headers,
    settings: Settings,
    instance: Instance,
    library: Path,
    set_quota,
):
    leave_free(settings, instance, library, 0)
    set_quota("alice", 1)

    response = api.post(f"{API}/instances/{instance.id}/snapshots", headers=as_alice)

    assert refusal(response, ["instance_id"]) == (
        f"Taking a snapshot would pass your storage quota: 1.0 MiB of 1.0 MiB used, 0 bytes "
        f"free. {ADVICE}"
    )
    assert api.get(f"{API}/snapshots", headers=as_alice).json() == []
    assert not (lifecycle.working_copy(settings, instance) / snapshots.STATE_DIR).exists()


def test_a_snapshot_that_does_not_fit_once_packed_fails_and_its_file_is_removed(
    api: TestClient,
    session: Session,
    as_alice: Headers,
    settings: Settings,
    instance: Instance,
    library: Path,
    set_quota,
):
    leave_free(settings, instance, library, 100)
    set_quota("alice", 1)

    started = api.post(f"{API}/instances/{instance.id}/snapshots", headers=as_alice)
    assert started.status_code == 202, started.text
    snapshot_id = started.json()["id"]
    snapshots.pack_snapshot(settings, bound_sessions(session), snapshot_id)
    failed = api.get(f"{API}/snapshots/{snapshot_id}", headers=as_alice).json()

    assert (failed["state"], failed["size_bytes"]) == ("failed", None)
    match = re.fullmatch(
        r"Its packed file was removed: keeping it would pass your storage quota: 1023\.9 KiB "
        r"of 1\.0 MiB used, 100 bytes free, (\d+) bytes needed\. " + re.escape(ADVICE),
        failed["reason"],
    )
    assert match is not None, failed["reason"]
    assert int(match.group(1)) > 100
    assert not snapshots.snapshot_file(settings, snapshot_id).exists()
    assert storage(api, as_alice)["snapshots_bytes"] == 0


def test_a_refused_periodic_snapshot_is_recorded_and_the_older_ones_stay(
    session: Session,
    alice: User,
    settings: Settings,
    instance: Instance,
    library: Path,
    set_quota,
):
    set_quota("alice", 1)
    first = snapshots.start_snapshot(
        session=session, settings=settings, instance=instance, auto=True
    )
    snapshots.pack_snapshot(settings, bound_sessions(session), first.id)
    session.refresh(first)
    assert first.state == SnapshotState.READY
    leave_free(settings, instance, library, 0, snapshots_bytes=first.size_bytes)

    refused = snapshots.start_snapshot(
        session=session, settings=settings, instance=instance, auto=True
    )
    refused_id, refused_state = refused.id, refused.state
    again = snapshots.start_snapshot(
        session=session, settings=settings, instance=instance, auto=True
    )

    assert (refused_state, again.state) == (SnapshotState.FAILED, SnapshotState.FAILED)
    assert again.reason == (
        f"Taking a snapshot would pass your storage quota: 1.0 MiB of 1.0 MiB used, 0 bytes "
        f"free. {ADVICE}"
    )
    kept = snapshots.list_snapshots(
        session=session, actor=make_principal(alice), instance_id=instance.id
    )
    # Only the newest refusal is kept, the ready one stays with its file.
    assert refused_id not in {s.id for s in kept}
    assert [(s.id, s.state) for s in kept] == [
        (again.id, SnapshotState.FAILED),
        (first.id, SnapshotState.READY),
    ]
    assert snapshots.snapshot_file(settings, first.id).stat().st_size == first.size_bytes


def test_a_periodic_snapshot_may_use_the_space_of_the_one_it_replaces(
    session: Session,
    alice: User,
    settings: Settings,
    instance: Instance,
    library: Path,
    set_quota,
):
    instance.auto_snapshot_keep = 1
    session.commit()
    set_quota("alice", 1)
    first = snapshots.start_snapshot(
        session=session, settings=settings, instance=instance, auto=True
    )
    snapshots.pack_snapshot(settings, bound_sessions(session), first.id)
    session.refresh(first)
    assert first.size_bytes is not None
    first_id = first.id
    free = 200  # less than a snapshot takes, but with the old one's room it fits
    assert first.size_bytes > free + 50
    leave_free(settings, instance, library, free, snapshots_bytes=first.size_bytes)

    second = snapshots.start_snapshot(
        session=session, settings=settings, instance=instance, auto=True
    )
    snapshots.pack_snapshot(settings, bound_sessions(session), second.id)
    session.expire_all()

    kept = snapshots.list_snapshots(
        session=session, actor=make_principal(alice), instance_id=instance.id
    )
    assert [(s.id, s.state, s.reason) for s in kept] == [(second.id, SnapshotState.READY, None)]
    assert not snapshots.snapshot_file(settings, first_id).exists()


def test_a_snapshot_upload_over_the_quota_is_refused_before_it_is_stored(
    api: TestClient, as_alice: Headers, settings: Settings, set_quota
):
    set_quota("alice", 1)

    response = api.post(f"{API}/snapshots/upload", content=b"z" * 2 * MIB, headers=as_alice)

    assert refusal(response, ["body"]) == (
        "Uploading this snapshot would pass your storage quota: 0 bytes of 1.0 MiB used, "
        f"1.0 MiB free, 2.0 MiB needed. {ADVICE}"
    )
    folder = snapshots.snapshots_dir(settings)
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_snapshot_upload_without_a_length_stops_at_the_quota(
    api: TestClient, as_alice: Headers, settings: Settings, set_quota
):
    set_quota("alice", 1)

    def body():
        for _ in range(32):
            yield b"z" * 64 * KIB

    response = api.post(f"{API}/snapshots/upload", content=body(), headers=as_alice)

    assert refusal(response, ["body"]) == (
        "Uploading this snapshot would pass your storage quota: 0 bytes of 1.0 MiB used, "
        f"1.0 MiB free. {ADVICE}"
    )
    assert list(snapshots.snapshots_dir(settings).iterdir()) == []


def _ready_snapshot(
    api: TestClient, session: Session, settings: Settings, instance: Instance, as_alice: Headers
) -> int:
    """A snapshot of the instance after 64 KiB of incompressible data went into it."""
    data = lifecycle.working_copy(settings, instance) / "state.bin"
    data.write_bytes(random.Random(7).randbytes(64 * KIB))
    started = api.post(f"{API}/instances/{instance.id}/snapshots", headers=as_alice)
    assert started.status_code == 202, started.text
    snapshot_id: int = started.json()["id"]
    snapshots.pack_snapshot(settings, bound_sessions(session), snapshot_id)
    assert api.get(f"{API}/snapshots/{snapshot_id}", headers=as_alice).json()["state"] == "ready"
    return snapshot_id


def test_respawning_into_full_storage_is_refused_and_creates_nothing(
    api: TestClient,
    session: Session,
    as_alice: Headers,
    settings: Settings,
    instance: Instance,
    library: Path,
    set_quota,
):
    snapshot_id = _ready_snapshot(api, session, settings, instance, as_alice)
    size = api.get(f"{API}/snapshots/{snapshot_id}", headers=as_alice).json()["size_bytes"]
    leave_free(settings, instance, library, 0, snapshots_bytes=size)
    set_quota("alice", 1)

    response = api.post(f"{API}/snapshots/{snapshot_id}/respawn", headers=as_alice, json={})

    assert refusal(response, ["snapshot_id"]) == (
        f"Re-spawning this snapshot would pass your storage quota: 1.0 MiB of 1.0 MiB used, "
        f"0 bytes free. {ADVICE}"
    )
    assert [i["id"] for i in api.get(f"{API}/instances", headers=as_alice).json()] == [instance.id]


def test_respawning_a_snapshot_larger_than_what_is_free_is_refused_and_leaves_nothing(
    api: TestClient,
    session: Session,
    as_alice: Headers,
    settings: Settings,
    instance: Instance,
    library: Path,
    set_quota,
):
    snapshot_id = _ready_snapshot(api, session, settings, instance, as_alice)
    size = api.get(f"{API}/snapshots/{snapshot_id}", headers=as_alice).json()["size_bytes"]
    leave_free(settings, instance, library, 16 * KIB, snapshots_bytes=size)  # < 64 KiB unpacked
    set_quota("alice", 1)
    instances_dir = lifecycle.instance_dir(settings, instance.id).parent
    before = sorted(p.name for p in instances_dir.iterdir())

    response = api.post(f"{API}/snapshots/{snapshot_id}/respawn", headers=as_alice, json={})

    assert refusal(response, ["snapshot_id"]).startswith(
        "Re-spawning this snapshot would pass your storage quota: "
    )
    assert sorted(p.name for p in instances_dir.iterdir()) == before
    assert len(api.get(f"{API}/instances", headers=as_alice).json()) == 1
    set_quota("alice", None)  # with room, the same snapshot re-spawns
    again = api.post(f"{API}/snapshots/{snapshot_id}/respawn", headers=as_alice, json={})
    assert again.status_code == 201, again.text
