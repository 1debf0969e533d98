"""The snapshot file: a zstd-compressed tar stream of ``snapshot.json`` and ``dt/``.

Written to a hidden partial name, flushed to disk and renamed only when complete, so a
crash or a full disk never leaves a file that looks like a snapshot. Its sha256 is taken
while writing and checked again before any use; unpacking goes through tarfile's "data"
filter (no absolute paths, no ``..``, no links out, no devices) and a size bound.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import zstandard

FORMAT = 1
METADATA = "snapshot.json"
TREE = "dt"
CHUNK = 1024 * 1024


class ArchiveError(Exception):
    """A snapshot file that cannot be used; the message says why."""


class ArchiveTooLarge(ArchiveError):
    """Raised by ``unpack`` when the members add up to more than it may write."""


class _HashingWriter(io.RawIOBase):
    """Passes bytes on to ``target`` and hashes them on the way."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        self.target.write(view)
        return len(view)


def partial_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")


def pack(folder: Path, metadata: dict[str, Any], target: Path) -> tuple[int, str]:
    """Write ``folder`` (as ``dt/``) and ``metadata`` to ``target``; returns size and sha256."""
    partial = partial_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with partial.open("wb") as raw:
            hashing = _HashingWriter(raw)
            compressor = zstandard.ZstdCompressor(level=3)
            with (
                compressor.stream_writer(hashing, closefd=False) as compressed,  # type: ignore[arg-type]
                tarfile.open(fileobj=compressed, mode="w|") as tar,
            ):
                document = json.dumps({"format": FORMAT, **metadata}, indent=2).encode()
                info = tarfile.TarInfo(METADATA)
                info.size = len(document)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(document))
                tar.add(folder, arcname=TREE, recursive=True)
            raw.flush()
            os.fsync(raw.fileno())
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return hashing.size, hashing.digest.hexdigest()


def checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raises ArchiveError unless the file's sha256 is ``expected``."""
    if not path.is_file():
        raise ArchiveError("the snapshot file is missing")
    actual = checksum(path)
    if actual != expected:
        raise ArchiveError(
            f"the snapshot file's checksum is {actual[:12]}…, not the recorded "
            f"{expected[:12]}…: it was changed or damaged"
        )


@contextmanager
def _members(path: Path) -> Iterator[tarfile.TarFile]:
    with path.open("rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        try:
            with tarfile.open(fileobj=reader, mode="r|") as tar:
                yield tar
        except (tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
            raise ArchiveError(f"the snapshot file is not a valid archive ({exc})") from exc


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``snapshot.json`` of a snapshot file (its first member)."""
    with _members(path) as tar:
        first = tar.next()
        if first is None or first.name != METADATA or not first.isfile():
            raise ArchiveError(f"the archive does not start with {METADATA}")
        if first.size > CHUNK:
            raise ArchiveError(f"{METADATA} is too large")
        handle = tar.extractfile(first)
        if handle is None:
            raise ArchiveError(f"{METADATA} cannot be read")
        try:
            metadata = json.loads(handle.read())
        except ValueError as exc:
            raise ArchiveError(f"{METADATA} is not JSON ({exc})") from exc
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ArchiveError(f"{METADATA} is not a dtaas snapshot of format {FORMAT}")
    return metadata


def unpack(path: Path, target: Path, *, max_bytes: int) -> None:
    """Extract the ``dt/`` tree to ``target`` (which must not exist), safely.

    Raises ArchiveError for anything outside ``dt/``, escaping paths or links, special
    files, or more than ``max_bytes`` in all; nothing is left behind then.
    """
    staging = target.with_name(f".{target.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    total = 0

    def checked(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        nonlocal total
        if member.name == METADATA:
            return None
        if member.name != TREE and not member.name.startswith(f"{TREE}/"):
            raise ArchiveError(f"unexpected member {member.name!r} outside {TREE}/")
        total += member.size
        if total > max_bytes:
            raise ArchiveTooLarge(f"the snapshot unpacks to more than {max_bytes} bytes")
        try:
            return tarfile.data_filter(member, dest)
        except tarfile.FilterError as exc:
            raise ArchiveError(f"unsafe member {member.name!r}: {exc}") from exc

    try:
        with _members(path) as tar:
            tar.extractall(staging, filter=checked)  # noqa: S202  # checked: data_filter + bounds
        tree = staging / TREE
        if not tree.is_dir():
            raise ArchiveError(f"the archive has no {TREE}/ folder")
        tree.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
