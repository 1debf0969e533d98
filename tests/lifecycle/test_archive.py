"""The snapshot file format: packing, verifying and unpacking without leaving anything half-done."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dtaas.lifecycle import archive


def test_pack_verify_read_and_unpack_round_trip(tmp_path):
    folder = tmp_path / "dt"
    (folder / "lifecycle").mkdir(parents=True)
    (folder / "lifecycle" / "execute").write_text("#!/bin/sh\necho hi\n")
    (folder / "lifecycle" / "execute").chmod(0o755)
    (folder / "link").symlink_to("lifecycle/execute")
    target = tmp_path / "snapshots" / "7.tar.zst"

    size, digest = archive.pack(folder, {"twin_path": "a/b", "values": {"n": 1}}, target)
    archive.verify(target, digest)
    metadata = archive.read_metadata(target)
    archive.unpack(target, tmp_path / "restored", max_bytes=10**6)

    assert size == target.stat().st_size
    assert metadata == {"format": 1, "twin_path": "a/b", "values": {"n": 1}}
    restored = tmp_path / "restored"
    assert (restored / "lifecycle" / "execute").read_text() == "#!/bin/sh\necho hi\n"
    assert os.access(restored / "lifecycle" / "execute", os.X_OK)
    assert (restored / "link").readlink().as_posix() == "lifecycle/execute"
    assert sorted(p.name for p in target.parent.iterdir()) == ["7.tar.zst"]


def test_unpack_over_the_size_bound_leaves_nothing(tmp_path):
    folder = tmp_path / "dt"
    folder.mkdir()
    (folder / "data.bin").write_bytes(bytes(4096))
    target = tmp_path / "1.tar.zst"
    archive.pack(folder, {}, target)

    with pytest.raises(archive.ArchiveError, match="more than 1000 bytes"):
        archive.unpack(target, tmp_path / "restored", max_bytes=1000)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.tar.zst", "dt"]


def test_pack_that_cannot_write_leaves_no_file(tmp_path):
    # A real file-size limit makes the write fail half-way, as a full disk would.
    folder = tmp_path / "dt"
    folder.mkdir()
    (folder / "big.bin").write_bytes(os.urandom(1024 * 1024))  # does not compress
    target = tmp_path / "out" / "1.tar.zst"
    program = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from dtaas.lifecycle import archive\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))\n"
        "try:\n"
        f"    archive.pack(Path({str(folder)!r}), {{}}, Path({str(target)!r}))\n"
        "except OSError as exc:\n"
        "    print('failed:', exc.strerror)\n"
    )

    result = subprocess.run(  # our own interpreter
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout == "failed: File too large\n"
    assert list(target.parent.iterdir()) == []
