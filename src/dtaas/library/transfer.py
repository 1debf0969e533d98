"""Moving bytes in and out of a library: streamed uploads, safe zip unpacking, zip downloads."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header
from zipstream import ZIP_DEFLATED, ZipStream

from dtaas.accounting.budget import StorageBudget
from dtaas.config import Settings
from dtaas.errors import BadRequest, Conflict, DtaasError, InvalidInput, PayloadTooLarge
from dtaas.library import paths
from dtaas.library.access import Location, locate
from dtaas.library.paths import HIDDEN_PREFIX
from dtaas.library.schemas import Entry, Uploaded
from dtaas.library.service import _counted, _detail, _temporary_sibling, require_folder
from dtaas.security.permissions import Principal

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ZipLimits:
    """Bounds that keep a zip bomb from filling the disk."""

    max_entries: int
    max_total_bytes: int
    max_ratio: int


@dataclass
class _Part:
    field_name: str = ""
    filename: str | None = None
    tmp: Path | None = None
    handle: BinaryIO | None = None
    value: bytearray = field(default_factory=bytearray)


class UploadReceiver:
    """Parses a multipart body chunk by chunk, writing each file straight to disk.

    Files land under hidden names in the target folder and are renamed into place only
    when the whole body arrived, so a failed upload leaves nothing behind. With a
    ``budget``, the upload is refused (QuotaExceeded) as soon as its files would pass the
    owner's quota; the caller's ``abort`` then removes what had arrived.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        actor: Principal,
        folder: str,
        content_type: str,
        overwrite: bool,
        extract_zips: bool,
        budget: StorageBudget | None = None,
    ) -> None:
        self.actor = actor
        self.settings = settings
        self.location = locate(settings=settings, actor=actor, path=folder, write=True)
        require_folder(self.location)
        self.budget = _counted(budget, self.location)
        # Measured once: the room is compared with every chunk as it arrives.
        self.room = self.budget.free_bytes() if self.budget is not None else None
        self.stored = 0  # bytes of the files written so far
        self.freed = 0  # bytes of the files this upload replaces
        mime, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if mime != b"multipart/form-data" or not boundary:
            raise BadRequest(
                "Upload files as multipart/form-data with one or more 'files' parts.",
                loc=["header", "Content-Type"],
            )
        self.overwrite = overwrite
        self.extract_zips = extract_zips
        self.received = 0
        self.parts: list[_Part] = []
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, str] = {}
        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
            },
        )

    # --- parser callbacks ----------------------------------------------------------------

    def _on_part_begin(self) -> None:
        self._part = _Part()
        self._headers = {}

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        name = self._header_field.decode("latin-1").lower()
        # latin-1 keeps the raw bytes: parse_options_header re-encodes with it, and the
        # file name is decoded as UTF-8 afterwards.
        self._headers[name] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        self._part.field_name = options.get(b"name", b"").decode("utf-8", errors="replace")
        raw_name = options.get(b"filename")
        if raw_name is None:
            return
        # Browsers send the bare name; keep only the last component of anything else.
        filename = raw_name.decode("utf-8", errors="replace").replace("\\", "/").rsplit("/")[-1]
        target = self._target(filename)
        if target.exists() and not self.overwrite:
            raise Conflict(
                f"{self.location.path}/{filename} already exists; upload with overwrite to "
                "replace it.",
                loc=["files", filename],
            )
        if self.overwrite and target.is_file():
            self.freed += target.stat().st_size
        self._part.filename = filename
        self._part.tmp = _temporary_sibling(target)
        self._part.handle = self._part.tmp.open("xb")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.handle is not None:
            self._charge(end - start, doing="Uploading", total_known=False)
            self._part.handle.write(data[start:end])
        elif len(self._part.value) + end - start <= 1024:
            self._part.value += data[start:end]

    def _on_part_end(self) -> None:
        if self._part.handle is not None:
            self._part.handle.close()
            self._part.handle = None
        self.parts.append(self._part)

    def _charge(self, size: int, *, doing: str, total_known: bool) -> None:
        """Count ``size`` more bytes; raises QuotaExceeded before they would pass the quota
        (saying how much is needed when ``total_known``, not midway through a stream)."""
        if self.room is not None and self.budget is not None:
            growth = self.stored + size - self.freed
            if growth > self.room:
                needed = growth if total_known else None
                raise self.budget.refusal(doing=doing, needed=needed, loc=["files"])
        self.stored += size

    # --- driving -------------------------------------------------------------------------

    def _target(self, filename: str) -> Path:
        inner = f"{self.location.inner}/{filename}" if self.location.inner else filename
        return paths.resolve(root=self.location.area_root, path=inner, must_exist=False)

    def write(self, chunk: bytes) -> None:
        """Feed the next piece of the body."""
        self.received += len(chunk)
        self._parser.write(chunk)

    def finish(self, *, zip_limits: ZipLimits) -> Uploaded:
        """Move every received file into place; unpack zips when asked.

        Raises: BadRequest if no file arrived; Conflict; InvalidInput or PayloadTooLarge
        for a zip that is unsafe; QuotaExceeded when unpacked zips would pass the quota.
        """
        self._parser.finalize()
        files = [part for part in self.parts if part.tmp is not None and part.filename]
        if not files:
            raise BadRequest("The upload contained no file parts.", loc=["files"])
        zips = [part for part in files if self._unpacks(part)]
        for part in zips:
            assert part.tmp is not None  # noqa: S101  # filtered above
            # Checked before anything is placed, with the sizes the zip declares: unpacking
            # refuses a member that writes more than its declared size.
            self._charge(
                _unpacked_bytes(part.tmp) - part.tmp.stat().st_size,
                doing="Unpacking this zip",
                total_known=True,
            )
        entries: list[Entry] = []
        extracted: list[str] = []
        for part in files:
            assert part.tmp is not None and part.filename is not None  # noqa: S101  # filtered above
            target = self._target(part.filename)
            if self._unpacks(part):
                folder = self._target(part.filename[:-4] or "archive")
                extract_zip(archive=part.tmp, into=folder, limits=zip_limits)
                part.tmp.unlink()
                extracted.append(f"{self.location.path}/{folder.name}")
                continue
            if self.overwrite and target.is_dir():
                raise Conflict(f"{self.location.path}/{part.filename} is a folder.")
            part.tmp.replace(target)
            inner = f"{self.location.inner}/{part.filename}".lstrip("/")
            placed = Location(
                area=self.location.area,
                inner=inner,
                real=target,
                area_root=self.location.area_root,
            )
            entries.append(_detail(actor=self.actor, location=placed))
        if self.budget is not None:
            self.budget.changed(self.stored - self.freed)
        log.info(
            "upload stored folder=%s files=%s bytes=%s actor=%s",
            self.location.path,
            len(entries),
            self.received,
            self.actor.username,
        )
        return Uploaded(files=entries, extracted=extracted)

    def _unpacks(self, part: _Part) -> bool:
        return self.extract_zips and (part.filename or "").lower().endswith(".zip")

    def abort(self) -> None:
        """Remove whatever a failed upload left."""
        for part in [*self.parts, self._part]:
            if part.handle is not None:
                part.handle.close()
            if part.tmp is not None:
                part.tmp.unlink(missing_ok=True)


def _unpacked_bytes(archive: Path) -> int:
    """What a zip declares its members unpack to; 0 for a damaged zip (unpacking says why)."""
    try:
        with zipfile.ZipFile(archive) as opened:
            return sum(info.file_size for info in opened.infolist())
    except (zipfile.BadZipFile, OSError):
        return 0


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def extract_zip(*, archive: Path, into: Path, limits: ZipLimits) -> None:
    """Unpack ``archive`` into the new folder ``into``, refusing zip-slip and zip bombs.

    Members are unpacked into a hidden sibling folder, every member path going through
    the library's resolver, and the folder is renamed into place only when all is well.

    Raises: Conflict if ``into`` exists; InvalidInput; PayloadTooLarge.
    """
    if into.exists():
        raise Conflict(f"A folder named {into.name} already exists; rename the zip.")
    try:
        archive_file = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"The zip file is damaged: {exc}.", loc=["files"]) from None
    staging = _temporary_sibling(into)
    staging.mkdir()
    try:
        with archive_file:
            _check_members(archive_file.infolist(), limits)
            written = 0
            for info in archive_file.infolist():
                name = info.filename.rstrip("/")
                if not name:
                    continue
                try:
                    _make_parents(staging, name)
                    target = paths.resolve(root=staging, path=name, must_exist=False)
                except DtaasError as exc:
                    raise InvalidInput(
                        f"The zip member {info.filename!r} is refused: {exc.message}",
                        loc=["files"],
                    ) from None
                if info.is_dir():
                    target.mkdir(exist_ok=True)
                    continue
                written += _extract_member(archive_file, info, target, limits, written)
        staging.rename(into)
    except DtaasError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InvalidInput(f"The zip file could not be unpacked: {exc}.", loc=["files"]) from None


def _check_members(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    if len(infos) > limits.max_entries:
        raise PayloadTooLarge(
            f"The zip has {len(infos)} entries; at most {limits.max_entries} are unpacked.",
            loc=["files"],
        )
    declared = sum(info.file_size for info in infos)
    if declared > limits.max_total_bytes:
        raise PayloadTooLarge(
            f"The zip would unpack to {declared} bytes; the limit is {limits.max_total_bytes}.",
            loc=["files"],
        )
    for info in infos:
        if _is_symlink(info):
            raise InvalidInput(
                f"The zip contains a symbolic link ({info.filename}); links are not unpacked.",
                loc=["files"],
            )
        if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
            raise PayloadTooLarge(
                f"{info.filename} is compressed more than {limits.max_ratio}:1, like a zip "
                "bomb; it is not unpacked.",
                loc=["files"],
            )


def _make_parents(staging: Path, name: str) -> None:
    parts = name.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        parent = paths.resolve(root=staging, path="/".join(parts[:depth]), must_exist=False)
        parent.mkdir(exist_ok=True)


def _extract_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    limits: ZipLimits,
    written_before: int,
) -> int:
    # Count what is really written: the sizes in the zip's directory can lie.
    written = 0
    with archive.open(info) as source, target.open("xb") as sink:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > info.file_size or written_before + written > limits.max_total_bytes:
                raise PayloadTooLarge(
                    f"{info.filename} unpacks to more than the zip declares; refused.",
                    loc=["files"],
                )
            sink.write(chunk)
    return written


def zip_folder(*, settings: Settings, actor: Principal, path: str) -> tuple[str, Iterator[bytes]]:
    """A folder as a zip stream, built while it is sent; returns its file name and bytes.

    Symlinks that leave the area and the platform's hidden work files are left out.

    Raises: BadRequest; PermissionDenied; NotFound.
    """
    location = locate(settings=settings, actor=actor, path=path, write=False)
    require_folder(location)
    stream = ZipStream(compress_type=ZIP_DEFLATED, sized=False)
    root = location.real
    for folder, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(HIDDEN_PREFIX))
        base = Path(folder)
        for name in sorted(filenames):
            if name.startswith(HIDDEN_PREFIX):
                continue
            real = (base / name).resolve()
            if location.area_root not in real.parents or not real.is_file():
                continue
            stream.add_path(str(real), str((base / name).relative_to(root)))
    name = (location.inner.rsplit("/", 1)[-1] or location.area) + ".zip"
    log.info("folder download path=%s actor=%s", location.path, actor.username)
    return name, iter(stream)
