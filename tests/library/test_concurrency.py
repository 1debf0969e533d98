"""Concurrent edits of one file: of two writers holding the same ETag, exactly one wins."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from dtaas.config import Settings
from dtaas.errors import PreconditionFailed
from dtaas.library import service
from dtaas.library.schemas import EntryDetail
from dtaas.security.models import Role
from dtaas.security.permissions import Principal
from tests.library.support import leftovers

ROUNDS = 20
SIZE = 256 * 1024  # large enough that a torn write would show as a mix
MAX_BYTES = 4 * SIZE
ALICE = Principal(user_id=1, username="alice", role=Role.USER, auth="token", credential_id=1)


def _write(
    *, settings: Settings, barrier: threading.Barrier, content: bytes, etag: str
) -> EntryDetail:
    barrier.wait(timeout=10)
    return service.write_text(
        settings=settings,
        actor=ALICE,
        path="alice/data/shared.txt",
        content=content,
        if_match=etag,
        max_bytes=MAX_BYTES,
    )


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_two_edits_of_one_version_one_wins_and_the_other_is_412(
    settings: Settings, round_number: int
) -> None:
    first = service.write_text(
        settings=settings,
        actor=ALICE,
        path="alice/data/shared.txt",
        content=b"original\n",
        if_match=None,
        max_bytes=MAX_BYTES,
    )
    contents = [b"A" * (SIZE - 1) + b"\n", b"B" * (SIZE + round_number) + b"\n"]
    barrier = threading.Barrier(len(contents))
    with ThreadPoolExecutor(max_workers=len(contents)) as pool:
        futures: list[Future[EntryDetail]] = [
            pool.submit(_write, settings=settings, barrier=barrier, content=c, etag=first.etag)
            for c in contents
        ]
    winners = [index for index, future in enumerate(futures) if future.exception() is None]
    losers = [future.exception() for future in futures if future.exception() is not None]
    assert len(winners) == 1, [future.exception() for future in futures]
    assert len(losers) == 1
    assert isinstance(losers[0], PreconditionFailed)
    real: Path = settings.resolved_files_dir / "alice" / "data" / "shared.txt"
    assert real.read_bytes() == contents[winners[0]]
    assert futures[winners[0]].result().etag == service.etag_of(real.stat())
    assert leftovers(settings.resolved_files_dir / "alice") == []
