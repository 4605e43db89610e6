"""Collect scans from folders, zip files and single files, refusing hostile ones by name."""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

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
class RejectedFile:
    """A file (or a whole zip or folder) that was refused, and why."""

    name: str
    reason: str


def collect_scans(
    paths: Sequence[Path], limits: IngestSettings
) -> tuple[list[ScanFile], list[RejectedFile]]:
    """Read every file under `paths` (folders, zips, files); never raises for bad input."""
    scans: list[ScanFile] = []
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
    scans: list[ScanFile],
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
    scans: list[ScanFile],
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
        with path.open("rb") as fh:
            # Read one byte past the limit: the file may have grown since stat().
            data = fh.read(limits.max_file_bytes + 1)
    except OSError as e:
        rejected.append(RejectedFile(name, f"cannot read: {e.strerror or e}"))
        return
    if len(data) > limits.max_file_bytes:
        rejected.append(RejectedFile(name, _too_big(len(data), limits.max_file_bytes)))
        return
    scans.append(ScanFile(name, data))


def _collect_zip(
    path: Path,
    size: int,
    name: str,
    limits: IngestSettings,
    scans: list[ScanFile],
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
            fixes = _misflagged_names(fh, found) if found else set()
            source = cast(BinaryIO, _FlagsCleared(fh, fixes)) if fixes else fh
            with zipfile.ZipFile(source) as zf:
                _read_zip(zf, name, limits, scans, rejected)
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


def _read_zip(
    zf: zipfile.ZipFile,
    zip_name: str,
    limits: IngestSettings,
    scans: list[ScanFile],
    rejected: list[RejectedFile],
) -> None:
    """Check a whole opened archive, then read its members one by one."""
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
        data, reason = _read_member(zf, info, limits.max_file_bytes)
        if reason:
            rejected.append(RejectedFile(name, reason))
        else:
            scans.append(ScanFile(name, data))


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


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> tuple[bytes, str]:
    """Read a member in chunks, stopping past `limit` (declared sizes can lie)."""
    chunks: list[bytes] = []
    size = 0
    try:
        with zf.open(info) as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    return b"", (
                        f"more than {limit:,} bytes uncompressed (the limit), although "
                        f"the zip declares {info.file_size:,}"
                    )
                chunks.append(chunk)
    except Exception as e:  # CRC errors, bad deflate data, unsupported methods: all bad input.
        return b"", f"cannot be read from the zip: {e}"
    return b"".join(chunks), ""


def _too_big(size: int, limit: int) -> str:
    """The reason text for a file over a size limit."""
    return f"file is {size:,} bytes, over the limit of {limit:,} bytes"
