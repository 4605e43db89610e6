"""What Kerani acknowledged survives a power cut: commits are synced, blobs are fsynced.

A power cut cannot be simulated in a test, so the blob store's fsyncs are recorded by
patching os.fsync; the database's promise is read back from the connection's settings.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from kerani.storage.blobs import LocalBlobStore
from kerani.storage.database import open_engine

SQLITE_SYNCHRONOUS_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def _synced_commits(engine: Engine) -> list[str]:
    """How each of two fresh connections, open at once, syncs a commit."""
    # Raw DBAPI connections: the pool's connect hook has run, and no BEGIN holds a lock.
    first, second = engine.raw_connection(), engine.raw_connection()
    try:
        queries = (
            ["PRAGMA journal_mode", "PRAGMA synchronous"]
            if engine.dialect.name == "sqlite"
            else ["SHOW synchronous_commit"]
        )
        shown = []
        for conn in (first, second):
            cur = conn.cursor()
            values = []
            for query in queries:
                cur.execute(query)
                values.append(str(cur.fetchone()[0]))
            cur.close()
            shown.append(" ".join(values))
        return shown
    finally:
        first.close()
        second.close()


def test_every_connection_syncs_its_commits(database_url: str) -> None:
    engine = open_engine(database_url)
    engine.dispose()  # drop what migrating left in the pool: the next connections are new
    synced = _synced_commits(engine)
    if engine.dialect.name == "sqlite":
        # WAL with synchronous=FULL: a commit's WAL frames are fsynced before it returns.
        assert synced == [f"wal {SQLITE_SYNCHRONOUS_FULL}"] * 2
    else:
        # Kerani never turns PostgreSQL's synced commit off for its connections.
        assert synced == ["on", "on"]


def _fd_path(fd: int) -> tuple[str, Path]:
    kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
    return kind, Path(os.readlink(f"/proc/self/fd/{fd}"))


@pytest.fixture
def disk_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Every fsync (of a file or a folder) and rename the blob store makes, in order."""
    log: list[tuple[str, Path]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        log.append(_fd_path(fd))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        log.append(("rename", Path(src)))
        log.append(("to", Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return log


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd")
def test_a_blob_is_fsynced_before_its_rename_and_its_folder_after(
    tmp_path: Path, disk_log: list[tuple[str, Path]]
) -> None:
    root = (tmp_path / "blobs").resolve()
    store = LocalBlobStore(root)
    store.put("pages/abc/0001.png", b"\x89PNG one")
    (tmp,) = [p for kind, p in disk_log if kind == "rename"]
    assert tmp.parent == root / "pages" / "abc" and tmp.name.startswith(".tmp-")
    assert disk_log == [
        # The new folders' entries reach the disk in their parents, top down.
        ("dir", root),
        ("dir", root / "pages"),
        # The data, under its temporary name, then the rename, then the folder holding it.
        ("file", tmp),
        ("rename", tmp),
        ("to", root / "pages" / "abc" / "0001.png"),
        ("dir", root / "pages" / "abc"),
    ]
    disk_log.clear()
    store.put("pages/abc/0002.png", b"two")  # an existing folder: no more folder syncs
    assert [kind for kind, _ in disk_log] == ["file", "rename", "to", "dir"]
    assert store.get("pages/abc/0001.png") == b"\x89PNG one"


def _failing_write(real_fdopen: Callable[..., Any]) -> Callable[..., Any]:
    """os.fdopen whose file takes half of what is written, then finds the disk full."""

    class HalfWritten:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> HalfWritten:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> int:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    return lambda fd, *a, **k: HalfWritten(real_fdopen(fd, *a, **k))


@pytest.mark.parametrize("failure", ["write", "fsync"])
def test_a_failed_write_leaves_the_old_blob_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("exports/b1/records.csv", b"old,complete\n")
    if failure == "write":
        monkeypatch.setattr(os, "fdopen", _failing_write(os.fdopen))
    else:

        def fsync(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        store.put("exports/b1/records.csv", b"new,longer,content\n" * 100)
    with pytest.raises(OSError):
        store.put("exports/b2/records.csv", b"never stored\n")
    monkeypatch.undo()
    assert store.get("exports/b1/records.csv") == b"old,complete\n"
    assert not store.exists("exports/b2/records.csv")
    # No temporary file is left behind, hidden or not.
    files = sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*"))
    assert [f for f in files if not (store.root / f).is_dir()] == ["exports/b1/records.csv"]
