"""The client's storage and quota methods against a real server on a loopback port."""

from __future__ import annotations

import pytest

from dtaas.accounting.schemas import StorageRead
from dtaas.errors import NotFound, PermissionDenied, QuotaExceeded
from tests.live import LiveServer

MIB = 1024 * 1024


def test_storage_of_yourself_and_for_admins_of_anyone(live: LiveServer) -> None:
    (live.files_dir / "alice" / "data" / "levels.csv").write_bytes(b"1" * 5000)

    with live.client_for("alice") as alice, live.client_for("root") as root:
        own = alice.get_storage()
        by_admin = root.get_storage(username="alice")
        listed = root.list_storage()

    assert own == by_admin
    assert own == StorageRead(
        username="alice",
        library_bytes=5000,
        instances_bytes=0,
        snapshots_bytes=0,
        used_bytes=5000,
        quota_mb=None,
        quota_bytes=None,
        free_bytes=None,
        quota_source="site",
        over_quota=False,
    )
    assert [usage.username for usage in listed] == ["alice", "root"]


def test_admin_sets_and_resets_a_quota_that_then_refuses_writes(live: LiveServer) -> None:
    with live.client_for("root") as root, live.client_for("alice") as alice:
        set_ = root.set_quota(username="alice", quota_mb=1)
        with pytest.raises(QuotaExceeded) as refused:
            alice.write_text(path="alice/data/notes.txt", text="n" * (MIB + 1))
        reset = root.set_quota(username="alice", quota_mb=None)
        written = alice.write_text(path="alice/data/notes.txt", text="n" * (MIB + 1))

    assert (set_.quota_mb, set_.quota_source, set_.free_bytes) == (1, "user", MIB)
    assert refused.value.status_code == 403
    assert refused.value.message.startswith(
        "Saving this file would pass your storage quota: 0 bytes of 1.0 MiB used, 1.0 MiB "
        "free, 1.0 MiB needed."
    )
    assert (reset.quota_mb, reset.quota_source) == (None, "site")
    assert written.size == MIB + 1


def test_quota_methods_raise_the_servers_errors(live: LiveServer) -> None:
    with live.client_for("alice") as alice, live.client_for("root") as root:
        with pytest.raises(PermissionDenied) as not_admin:
            alice.set_quota(username="alice", quota_mb=100)
        with pytest.raises(PermissionDenied):
            alice.list_storage()
        with pytest.raises(PermissionDenied):
            alice.get_storage(username="root")
        with pytest.raises(NotFound) as unknown:
            root.set_quota(username="nobody", quota_mb=1)

    assert not_admin.value.type == "permission_denied"
    assert unknown.value.message == "There is no user named 'nobody'."
