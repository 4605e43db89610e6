"""Collect scans from folders, zip files and single files, refusing hostile ones by name.

Collecting reads each file once to hash it and keeps no bytes: a batch's files are read
again one at a time when they are ingested, so a folder of thousands of scans never sits in
memory whole.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

from kerani.core.errors import BadInputError
from kerani.core.settings import IngestSettings

_CHUNK = 1024 * 1024
# A tiny member that compresses very well (a blank page, a text file) cannot hurt anyone;
# the ratio check is for members big enough to matter, the size limits cover the rest.
_RATIO_CHECK_MIN_BYTES = 1024 * 1024
# Room per central-directory entry (46 fixed bytes plus name and extra fields) that a
# legitimate archive never comes near; bounds what zipfile parses before we can count.
_CENTRAL_DIR_BYTES_PER_MEMBER = 4096
_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_CENTRAL_ENTRY = b"PK\x01\x02"
_LOCAL_ENTRY = b"PK\x03\x04"
_UTF8_FLAG = 0x800  # general purpose bit 11: the name is UTF-8
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ScanFile:
    """One uploaded file: a relative display name (`batch/a.png`, `s.zip!b.tif`) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class ScanSource:
    """A file found for a batch: display name, size, content hash, and how to read it again."""

    name: str
    size: int
    sha256: str
    reader: Callable[[], bytes] = field(compare=False, repr=False)

    def read(self) -> ScanFile:
        """The file's bytes; BadInputError when it cannot be read again or has changed since
        it was hashed (its batch id was made from that hash)."""
        try:
            data = self.reader()
        except Exception as e:  # a file or zip that went away or broke: bad input all the same
            raise BadInputError(f"{self.name}: cannot be read: {e}") from e
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise BadInputError(
                f"{self.name}: changed while the batch was being read; submit again"
            )
        return ScanFile(self.name, data)


@dataclass(frozen=True)
class RejectedFile:
    """A file (or a whole zip or folder) that was refused, and why."""

    name: str
    reason: str


def collect_scans(
    paths: Sequence[Path], limits: IngestSettings
) -> tuple[list[ScanSource], list[RejectedFile]]:
    """Find and hash every file under `paths` (folders, zips, files); never raises for bad
    input."""
    scans: list[ScanSource] = []
    rejected: list[RejectedFile] = []
    for path in paths:
        display = _display_root(path)
        if path.is_dir():
            _walk_folder(path, display, limits, scans, rejected)
        elif path.exists():
            _collect_file(path, display, limits, scans, rejected)
        else:
            rejected.append(RejectedFile(display, "does not exist"))
    # Stable sorts on the name alone: deterministic, and no comparing of megabytes of data.
    scans.sort(key=lambda s: s.name)
    rejected.sort(key=lambda r: r.name)
    return scans, rejected


def _display_root(path: Path) -> str:
    """The last component of a path the user gave, so names never leak server folders."""
    if path.name and path.name not in (".", ".."):
        return path.name
    try:
        return path.resolve().name or str(path)
    except (OSError, RuntimeError):
        return str(path)


def _walk_folder(
    root: Path,
    display: str,
    limits: IngestSettings,
    scans: list[ScanSource],
    rejected: list[RejectedFile],
) -> None:
    """Walk a folder depth-first in sorted order, skipping hidden entries."""
    try:
        real_root = root.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        rejected.append(RejectedFile(display, f"cannot read folder: {e}"))
        return
    # An explicit stack rather than recursion: a hostile upload can nest folders deeply.
    stack: list[tuple[Path, str]] = [(root, display)]
    while stack:
        folder, folder_name = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            rejected.append(RejectedFile(folder_name, f"cannot read folder: {e.strerror or e}"))
            continue
        subfolders: list[tuple[Path, str]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = f"{folder_name}/{entry.name}"
            path = Path(entry.path)
            if entry.is_symlink():
                try:
                    target = path.resolve(strict=True)
                except (OSError, RuntimeError):
                    rejected.append(RejectedFile(name, "broken symlink"))
                    continue
                if not target.is_relative_to(real_root):
                    rejected.append(RejectedFile(name, "symlink points outside the folder"))
                    continue
                if target.is_dir():
                    # Its contents are reached directly; following it would only duplicate
                    # them (or loop forever).
                    continue
                _collect_file(target, name, limits, scans, rejected)
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append((path, name))
            else:
                _collect_file(path, name, limits, scans, rejected)
        stack.extend(reversed(subfolders))


def _collect_file(
    path: Path,
    name: str,
    limits: IngestSettings,
    scans: list[ScanSource],
    rejected: list[RejectedFile],
) -> None:
    """Read one file on disk, or open it as a zip when it is named `*.zip`."""
    try:
        info = path.stat()
    except OSError as e:
        rejected.append(RejectedFile(name, f"cannot read: {e.strerror or e}"))
        return
    if not stat.S_ISREG(info.st_mode):
        rejected.append(RejectedFile(name, "not a regular file"))
        return
    if name.lower().endswith(".zip"):
        _collect_zip(path, info.st_size, name, limits, scans, rejected)
        return
    if info.st_size > limits.max_file_bytes:
        rejected.append(RejectedFile(name, _too_big(info.st_size, limits.max_file_bytes)))
        return
    try:
        size, digest = _hash_file(path, limits.max_file_bytes)
    except OSError as e:
        rejected.append(RejectedFile(name, f"cannot read: {e.strerror or e}"))
        return
    if size > limits.max_file_bytes:
        rejected.append(RejectedFile(name, _too_big(size, limits.max_file_bytes)))
        return
    scans.append(ScanSource(name, size, digest, partial(_read_file, path, limits.max_file_bytes)))


def _hash_file(path: Path, limit: int) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in chunks; the size stops counting past `limit`
    (the file may have grown since stat())."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while size <= limit and (chunk := fh.read(_CHUNK)):
            size += len(chunk)
            h.update(chunk)
    return size, h.hexdigest()


def _read_file(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(limit + 1)


def _collect_zip(
    path: Path,
    size: int,
    name: str,
    limits: IngestSettings,
    scans: list[ScanSource],
    rejected: list[RejectedFile],
) -> None:
    """Read a zip's members in memory, refusing the whole archive when it looks like a bomb."""
    if size > limits.max_zip_total_bytes:
        rejected.append(
            RejectedFile(name, f"zip refused: {_too_big(size, limits.max_zip_total_bytes)}")
        )
        return
    try:
        with path.open("rb") as fh:
            found = _find_central_directory(fh)
            refusal = _check_central_directory(found, limits) if found else None
            if refusal:
                rejected.append(RejectedFile(name, f"zip refused: {refusal}"))
                return
            with _open_zip(fh, found) as zf:
                _read_zip(zf, name, limits, scans, rejected, _ZipArchive(path))
    except Exception as e:  # zipfile raises many types on a damaged archive; all mean "bad zip".
        rejected.append(RejectedFile(name, f"not a readable zip archive: {e}"))


@dataclass(frozen=True)
class _CentralDirectory:
    """Where a zip's central directory is, from its end record: member count, start, size,
    and how far the whole archive is shifted (data prepended, as self-extractors do)."""

    members: int
    start: int
    size: int
    shift: int


def _find_central_directory(fh: BinaryIO) -> _CentralDirectory | None:
    """Read the end record (zip64 too) as zipfile does; None when there is none."""
    fh.seek(0, os.SEEK_END)
    end = fh.tell()
    tail_len = min(end, 22 + 65535)
    fh.seek(end - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        return None  # Not a zip: zipfile will say so.
    members = int.from_bytes(tail[pos + 10 : pos + 12], "little")
    dir_size = int.from_bytes(tail[pos + 12 : pos + 16], "little")
    dir_offset = int.from_bytes(tail[pos + 16 : pos + 20], "little")
    dir_end = pos
    # Zip64 archives keep the real counts in a record just before the locator, which sits
    # just before the end record (where zipfile looks for it too).
    loc = pos - 20
    if loc >= 56 and tail[loc : loc + 4] == _EOCD64_LOCATOR:
        rec = tail[loc - 56 : loc]
        if rec[:4] == _EOCD64:
            members = int.from_bytes(rec[32:40], "little")
            dir_size = int.from_bytes(rec[40:48], "little")
            dir_offset = int.from_bytes(rec[48:56], "little")
            dir_end = loc - 56
    start = end - tail_len + dir_end - dir_size
    return _CentralDirectory(members, start, dir_size, start - dir_offset)


def _check_central_directory(found: _CentralDirectory, limits: IngestSettings) -> str | None:
    """Refuse by the end record's counts before zipfile parses the whole central directory."""
    if found.members > limits.max_zip_members:
        return f"{found.members} members, over the limit of {limits.max_zip_members}"
    if found.size > limits.max_zip_members * _CENTRAL_DIR_BYTES_PER_MEMBER:
        return f"central directory of {found.size:,} bytes is implausibly large"
    return None


def _misflagged_names(fh: BinaryIO, found: _CentralDirectory) -> set[int]:
    """Where to clear the UTF-8 flag of members whose names are flagged UTF-8 but are not.

    zipfile refuses the whole archive over one such name (tools on other systems write them);
    unflagged, the name is read as code page 437, as zipfile reads any unflagged name.
    Returns the offsets of the flag fields' high bytes, in central and local headers.
    """
    if found.start < 0:
        return set()
    fh.seek(found.start)
    directory = fh.read(found.size)
    fixes: set[int] = set()
    at = 0
    while at + 46 <= len(directory) and directory[at : at + 4] == _CENTRAL_ENTRY:
        flags = int.from_bytes(directory[at + 8 : at + 10], "little")
        name_len, extra_len, comment_len = (
            int.from_bytes(directory[at + i : at + i + 2], "little") for i in (28, 30, 32)
        )
        name = directory[at + 46 : at + 46 + name_len]
        if flags & _UTF8_FLAG and not _is_utf8(name):
            fixes.add(found.start + at + 9)
            local = int.from_bytes(directory[at + 42 : at + 46], "little") + found.shift
            fh.seek(local)
            if fh.read(4) == _LOCAL_ENTRY:
                fixes.add(local + 7)
        at += 46 + name_len + extra_len + comment_len
    return fixes


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _FlagsCleared(io.RawIOBase):
    """A zip file read through with the UTF-8 flag cleared at the given byte offsets."""

    def __init__(self, fh: BinaryIO, offsets: set[int]) -> None:
        self._fh = fh
        self._offsets = sorted(offsets)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, buffer: Any) -> int:
        start = self._fh.tell()
        data = self._fh.read(len(buffer))
        view = memoryview(buffer).cast("B")
        view[: len(data)] = data
        for offset in self._offsets:
            if start <= offset < start + len(data):
                view[offset - start] &= ~(_UTF8_FLAG >> 8) & 0xFF
        return len(data)


def _open_zip(fh: BinaryIO, found: _CentralDirectory | None) -> zipfile.ZipFile:
    """Open a zip, reading past member names wrongly flagged as UTF-8 (_misflagged_names)."""
    fixes = _misflagged_names(fh, found) if found else set()
    return zipfile.ZipFile(cast(BinaryIO, _FlagsCleared(fh, fixes)) if fixes else fh)


class _ZipArchive:
    """A zip whose members are read again at ingest, one by one: opened for the first read,
    closed after the last."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members = 0  # the sources that will read from it
        self._fh: BinaryIO | None = None
        self._zf: zipfile.ZipFile | None = None
        self._by_offset: dict[int, zipfile.ZipInfo] = {}

    def read(self, header_offset: int, limit: int) -> bytes:
        """The member at `header_offset` (names can repeat; offsets cannot)."""
        try:
            if self._zf is None:
                self._fh = self.path.open("rb")
                self._zf = _open_zip(self._fh, _find_central_directory(self._fh))
                self._by_offset = {i.header_offset: i for i in self._zf.infolist()}
            info = self._by_offset.get(header_offset)
            if info is None:
                return b""  # the zip changed: the hash check says so
            chunks: list[bytes] = []
            _, reason = _read_member(self._zf, info, limit, chunks.append)
            return b"" if reason else b"".join(chunks)
        finally:
            self.members -= 1
            if self.members <= 0:
                self.close()

    def close(self) -> None:
        """Close the archive (it opens again if read)."""
        if self._zf is not None:
            self._zf.close()
        if self._fh is not None:
            self._fh.close()
        self._zf = self._fh = None


def _read_zip(
    zf: zipfile.ZipFile,
    zip_name: str,
    limits: IngestSettings,
    scans: list[ScanSource],
    rejected: list[RejectedFile],
    archive: _ZipArchive,
) -> None:
    """Check a whole opened archive, then hash its members one by one."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    if len(infos) > limits.max_zip_members:
        rejected.append(
            RejectedFile(
                zip_name,
                f"zip refused: {len(infos)} members, over the limit of {limits.max_zip_members}",
            )
        )
        return
    total = sum(i.file_size for i in infos)
    if total > limits.max_zip_total_bytes:
        rejected.append(
            RejectedFile(
                zip_name,
                f"zip refused: members add up to {total:,} bytes uncompressed, over the limit "
                f"of {limits.max_zip_total_bytes:,} bytes",
            )
        )
        return
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_CHECK_MIN_BYTES and ratio > limits.max_zip_ratio:
            rejected.append(
                RejectedFile(
                    zip_name,
                    f"zip refused (looks like a zip bomb): member {info.filename!r} has a "
                    f"compression ratio of {ratio:.0f}:1, over the limit of "
                    f"{limits.max_zip_ratio:g}:1",
                )
            )
            return
    seen: set[str] = set()
    for info in sorted(infos, key=lambda i: i.filename):
        member = info.filename.replace("\\", "/")
        name = f"{zip_name}!{member}"
        problem = _unsafe_member_path(member)
        if problem:
            rejected.append(RejectedFile(name, f"unsafe path in zip: {problem}"))
            continue
        parts = member.split("/")
        if any(p.startswith(".") for p in parts) or parts[0] == "__MACOSX":
            continue  # Hidden files and macOS resource forks, as in a folder walk.
        if member in seen:
            rejected.append(RejectedFile(name, "duplicate name in zip"))
            continue
        seen.add(member)
        if member.lower().endswith(".zip"):
            rejected.append(
                RejectedFile(name, "nested zip archive: not expanded; upload its contents")
            )
            continue
        if info.flag_bits & 0x1:
            rejected.append(RejectedFile(name, "encrypted zip member: cannot be read"))
            continue
        if info.file_size > limits.max_file_bytes:
            rejected.append(RejectedFile(name, _too_big(info.file_size, limits.max_file_bytes)))
            continue
        h = hashlib.sha256()
        size, reason = _read_member(zf, info, limits.max_file_bytes, h.update)
        if reason:
            rejected.append(RejectedFile(name, reason))
            continue
        read = partial(archive.read, info.header_offset, limits.max_file_bytes)
        scans.append(ScanSource(name, size, h.hexdigest(), read))
        archive.members += 1


def _unsafe_member_path(member: str) -> str | None:
    """Why a member name could escape an extraction folder, or None when it is safe."""
    if member.startswith("/"):
        return "absolute path"
    if _DRIVE.match(member):
        return "drive letter"
    if ".." in member.split("/"):
        return "'..' in path"
    if "\x00" in member:
        return "NUL byte in name"
    return None


def _read_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, sink: Callable[[bytes], object]
) -> tuple[int, str]:
    """Pass a member's bytes to `sink` in chunks, stopping past `limit` (declared sizes can
    lie); its size, and why it could not be read ("" when it could)."""
    size = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(_CHUNK):
                size += len(chunk)
                if size > limit:
                    return size, (
                        f"more than {limit:,} bytes uncompressed (the limit), although "
                        f"the zip declares {info.file_size:,}"
                    )
                sink(chunk)
    except Exception as e:  # CRC errors, bad deflate data, unsupported methods: all bad input.
        return size, f"cannot be read from the zip: {e}"
    return size, ""


def _too_big(size: int, limit: int) -> str:
    """The reason text for a file over a size limit."""
    return f"file is {size:,} bytes, over the limit of {limit:,} bytes"
