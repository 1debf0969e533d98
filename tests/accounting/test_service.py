"""Storage accounting's service: usage by part from real files, quotas, the size cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from dtaas.accounting import service as accounting
from dtaas.accounting.models import StorageQuota
from dtaas.config import Settings
from dtaas.errors import InvalidInput, NotFound, PermissionDenied, QuotaExceeded
from dtaas.library import service as library_service
from dtaas.lifecycle import service as lifecycle
from dtaas.lifecycle import snapshots
from dtaas.lifecycle.models import Instance, SnapshotState
from dtaas.security.models import User
from tests.accounting.conftest import EXECUTE, KIB, MIB, fill
from tests.factories import make_principal
from tests.lifecycle.conftest import bound_sessions


def usage_of(session: Session, settings: Settings, user: User) -> accounting.StorageUsage:
    return accounting.get_storage(session=session, settings=settings, actor=make_principal(user))


def take_snapshot(session: Session, settings: Settings, alice: User, instance: Instance) -> int:
    """A ready snapshot of ``instance``, packed as the supervisor packs it."""
    snapshot = snapshots.create_snapshot(
        session=session, settings=settings, actor=make_principal(alice), instance_id=instance.id
    )
    snapshots.pack_snapshot(settings, bound_sessions(session), snapshot.id)
    session.expire_all()
    return snapshot.id


# --- usage ------------------------------------------------------------------------------------


def test_storage_adds_up_library_instances_and_snapshots(
    session: Session, settings: Settings, alice: User, bob: User, instance: Instance, library: Path
):
    fill(library / "data" / "levels.csv", 1000)
    fill(library / "models" / "tank" / "tank.fmu", 2345)
    fill(settings.resolved_files_dir / "bob" / "data" / "not-alices.bin", 7777)
    fill(settings.resolved_files_dir / "common" / "data" / "shared.bin", 5555)
    working_copy = lifecycle.working_copy(settings, instance)
    fill(working_copy / "output" / "result.bin", 4000)
    params = (working_copy / "params.json").stat().st_size
    snapshot_id = take_snapshot(session, settings, alice, instance)
    archive = snapshots.snapshot_file(settings, snapshot_id).stat().st_size

    used = usage_of(session, settings, alice)

    # The DT's own folder in the library is the one script, copied into the working copy.
    twin = len(EXECUTE)
    assert used.library_bytes == 1000 + 2345 + twin
    assert used.instances_bytes == twin + params + 4000
    assert used.snapshots_bytes == archive > 0
    assert used.used_bytes == 1000 + 2345 + twin + twin + params + 4000 + archive
    assert (used.quota_mb, used.quota_bytes, used.free_bytes) == (None, None, None)
    assert used.over_quota is False


def test_failed_snapshots_and_other_users_count_for_nothing(
    session: Session, settings: Settings, alice: User, bob: User, instance: Instance
):
    snapshot_id = take_snapshot(session, settings, alice, instance)
    size = snapshots.snapshot_file(settings, snapshot_id).stat().st_size
    failed = snapshots.create_snapshot(
        session=session, settings=settings, actor=make_principal(alice), instance_id=instance.id
    )
    failed.state = SnapshotState.FAILED
    failed.size_bytes = 10**9  # a size recorded on a failed one must not count
    session.commit()

    assert usage_of(session, settings, alice).snapshots_bytes == size
    assert usage_of(session, settings, bob).used_bytes == 0


def test_library_counts_hard_links_once_and_never_follows_symlinks(
    settings: Settings, alice: User, library: Path
):
    original = fill(library / "data" / "a.bin", 3000)
    os.link(original, library / "data" / "same-file.bin")
    big = fill(settings.resolved_files_dir / "common" / "data" / "big.bin", 50_000)
    (library / "data" / "link-to-common").symlink_to(big)
    (library / "data" / "link-to-folder").symlink_to(big.parent, target_is_directory=True)

    assert library_service.bytes_used(settings=settings, username="alice") == 3000


def test_a_missing_folder_takes_no_space(tmp_path: Path):
    assert library_service.tree_bytes(tmp_path / "never-made") == 0


# --- quotas -------------------------------------------------------------------------------------


def test_quota_is_the_users_own_else_the_site_default(
    session: Session, settings: Settings, alice: User, set_quota
):
    site = settings.model_copy(update={"storage_quota_mb": 50})
    fill(site.resolved_files_dir / "alice" / "data" / "x.bin", 3 * MIB)

    default = usage_of(session, site, alice)
    set_quota("alice", 2)
    own = usage_of(session, site, alice)
    set_quota("alice", None)
    reset = usage_of(session, site, alice)

    assert (default.quota_mb, default.quota_source, default.free_bytes) == (50, "site", 47 * MIB)
    assert (own.quota_mb, own.quota_source, own.free_bytes, own.over_quota) == (
        2,
        "user",
        0,
        True,
    )
    assert (reset.quota_mb, reset.quota_source) == (50, "site")
    assert session.scalars(select(StorageQuota)).all() == []


def test_setting_a_quota_twice_keeps_one_row_with_the_last_value(
    session: Session, settings: Settings, alice: User, admin: User, set_quota
):
    set_quota("alice", 5)
    set_quota("alice", 7)

    rows = session.scalars(select(StorageQuota)).all()
    assert [(row.user_id, row.quota_mb, row.set_by) for row in rows] == [
        (alice.id, 7, admin.username)
    ]


def test_only_admins_set_quotas_or_read_others_storage(
    session: Session, settings: Settings, alice: User, bob: User
):
    as_alice = make_principal(alice)
    with pytest.raises(PermissionDenied) as setting:
        accounting.set_quota(
            session=session, settings=settings, actor=as_alice, username="alice", quota_mb=1
        )
    with pytest.raises(PermissionDenied) as reading:
        accounting.get_storage(session=session, settings=settings, actor=as_alice, username="bob")
    with pytest.raises(PermissionDenied):
        accounting.list_storage(session=session, settings=settings, actor=as_alice)
    assert setting.value.type == reading.value.type == "permission_denied"
    assert setting.value.message == (
        "Your role 'user' does not allow 'manage_users'; ask an administrator for a role that does."
    )


def test_quota_for_an_unknown_user_is_not_found_and_a_negative_one_invalid(
    session: Session, settings: Settings, admin: User
):
    as_admin = make_principal(admin)
    with pytest.raises(NotFound) as unknown:
        accounting.set_quota(
            session=session, settings=settings, actor=as_admin, username="nobody", quota_mb=1
        )
    with pytest.raises(InvalidInput) as negative:
        accounting.set_quota(
            session=session, settings=settings, actor=as_admin, username="root-admin", quota_mb=-1
        )
    assert unknown.value.message == "There is no user named 'nobody'."
    assert negative.value.message == (
        "A quota is 0 to 1073741824 MiB, not -1; or none for the site default."
    )
    assert negative.value.loc == ["quota_mb"]


def test_admins_list_everyones_storage(
    session: Session, settings: Settings, admin: User, alice: User, bob: User, set_quota
):
    fill(settings.resolved_files_dir / "bob" / "data" / "b.bin", 4321)
    set_quota("alice", 3)

    listed = accounting.list_storage(
        session=session, settings=settings, actor=make_principal(admin)
    )

    by_name = {usage.username: usage for usage in listed}
    assert {"alice", "bob", "root-admin"} <= by_name.keys()
    assert (by_name["alice"].quota_mb, by_name["alice"].quota_source) == (3, "user")
    assert (by_name["bob"].library_bytes, by_name["bob"].quota_mb) == (4321, None)


# --- budgets ------------------------------------------------------------------------------------


def test_budget_refuses_what_would_pass_the_quota_and_says_what_to_do(
    session: Session, settings: Settings, alice: User, library: Path, set_quota
):
    fill(library / "data" / "x.bin", 1000 * KIB)
    set_quota("alice", 1)
    budget = accounting.budget_for(
        session=session, settings=settings, user_id=alice.id, username="alice"
    )

    budget.require(24 * KIB, doing="Saving this file")  # exactly what is left fits
    with pytest.raises(QuotaExceeded) as refused:
        budget.require(24 * KIB + 1, doing="Saving this file", loc=["body"])

    assert refused.value.status_code == 403
    assert refused.value.type == "quota_exceeded"
    assert refused.value.loc == ["body"]
    assert refused.value.message == (
        "Saving this file would pass your storage quota: 1000.0 KiB of 1.0 MiB used, "
        "24.0 KiB free, 24.0 KiB needed. Delete files, instances or snapshots you no longer "
        "need (`dtaas storage` shows what takes the space), or ask an administrator for a "
        "larger quota."
    )


def test_budget_without_a_quota_measures_nothing(
    session: Session, settings: Settings, alice: User, monkeypatch: pytest.MonkeyPatch
):
    walked: list[Path] = []

    def measure(folder: Path) -> int:
        walked.append(folder)
        return library_service.tree_bytes(folder)

    monkeypatch.setattr(
        accounting, "folder_sizes", accounting.FolderSizes(seconds=60, measure=measure)
    )
    budget = accounting.budget_for(
        session=session, settings=settings, user_id=alice.id, username="alice"
    )

    budget.require(10**15, doing="Uploading")

    assert budget.free_bytes() is None
    assert walked == []


def test_budget_keeps_the_cached_library_size_exact_across_writes(
    session: Session, settings: Settings, alice: User, library: Path, set_quota
):
    fill(library / "data" / "x.bin", 1000)
    set_quota("alice", 1)
    first = accounting.budget_for(
        session=session, settings=settings, user_id=alice.id, username="alice"
    )
    assert first.used_bytes() == 1000

    fill(library / "data" / "y.bin", 500)  # written by the platform, which reports it:
    first.changed(500)
    fill(library / "data" / "z.bin", 70)  # written behind the platform's back
    second = accounting.budget_for(
        session=session, settings=settings, user_id=alice.id, username="alice"
    )
    assert second.used_bytes() == 1500  # the cached walk, adjusted; z.bin not seen yet

    second.changed(None)  # e.g. a delete: measure again
    third = accounting.budget_for(
        session=session, settings=settings, user_id=alice.id, username="alice"
    )
    assert third.used_bytes() == 1570


# --- the size cache -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_folder_sizes_are_reused_until_they_expire(tmp_path: Path):
    clock = Clock()
    sizes = accounting.FolderSizes(seconds=60, clock=clock)
    fill(tmp_path / "a.bin", 100)
    assert sizes(tmp_path) == 100

    fill(tmp_path / "b.bin", 20)
    clock.now += 59.9
    assert sizes(tmp_path) == 100  # still cached
    clock.now += 0.2
    assert sizes(tmp_path) == 120  # expired: walked again


def test_folder_sizes_adjust_and_forget(tmp_path: Path):
    sizes = accounting.FolderSizes(seconds=60, clock=Clock())
    fill(tmp_path / "a.bin", 100)
    sizes.adjust(tmp_path, 50)  # nothing cached yet: nothing to adjust
    assert sizes(tmp_path) == 100

    sizes.adjust(tmp_path, 25)
    assert sizes(tmp_path) == 125
    sizes.adjust(tmp_path, -1000)
    assert sizes(tmp_path) == 0  # never negative
    sizes.forget(tmp_path)
    assert sizes(tmp_path) == 100


def test_folder_sizes_drop_expired_entries_once_many_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(accounting, "SIZE_CACHE_PRUNE_AT", 2)
    clock = Clock()
    sizes = accounting.FolderSizes(seconds=60, clock=clock)
    sizes(tmp_path / "a")
    sizes(tmp_path / "b")
    assert len(sizes) == 2

    clock.now += 61
    sizes(tmp_path / "c")  # a third entry: the two expired ones go

    assert len(sizes) == 1
