"""kill -9 of `kerani serve` under load: no acknowledged answer is lost, none is stored or
paid twice.

Simulated workers answer through a real `kerani serve` (two processes) while, at a random
moment, every process of the server is killed at once, as a crash would. The server is
started again on the same port; each worker resends what it had not seen acknowledged
under the same idempotency key, as the review page's outbox does, and works on a little.
Then the database must hold each acknowledged answer exactly once, with exactly one
payment, and each worker's answer count must match their answers.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from kerani.benchmarks.load_bench import RawConnection, Server, seed, seen_on_snippet
from kerani.core.settings import BlobSettings, CoreSettings, DatabaseSettings, Settings
from kerani.review_ui.server import free_port
from kerani.storage import schema
from kerani.storage.database import close_engine, open_engine

pytestmark = pytest.mark.slow
WORKERS = 8


class Outbox:
    """What the simulated workers did: answers acknowledged, and those still to resend."""

    def __init__(self) -> None:
        self.acknowledged: set[str] = set()
        self.waiting: dict[str, tuple[str, dict[str, Any]]] = {}  # worker code: (task, body)


async def _work(url: str, code: str, outbox: Outbox, stop: asyncio.Event) -> None:
    """Claim → snippet → answer until `stop`, then resend until the outbox is empty."""
    connection = RawConnection(url, {"Authorization": f"Bearer {code}"}, timeout=10)

    async def resend() -> bool:
        task_id, body = outbox.waiting[code]
        try:
            reply = await connection.request("POST", f"/api/tasks/{task_id}/answer", body)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            return False  # the server is down: later, with the same key
        assert reply.status == 200, (reply.status, reply.body)
        outbox.acknowledged.add(body["idempotency_key"])
        del outbox.waiting[code]
        return True

    try:
        while not stop.is_set():
            if code in outbox.waiting:
                if not await resend():
                    await asyncio.sleep(0.05)
                continue
            try:
                claim = await connection.request("POST", "/api/tasks/claim")
                if claim.status == 204:
                    await asyncio.sleep(0.2)
                    continue
                task = claim.json()
                await connection.request("GET", task["snippet_url"])
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                await asyncio.sleep(0.05)  # down: the next claim gives the same lease back
                continue
            body = {
                "kind": "value",
                "value": seen_on_snippet(task["field"]),
                "idempotency_key": secrets.token_urlsafe(12),
                "prefilled": task["ocr_guess"],
            }
            # In the outbox before it is sent: a crash may come before the reply.
            outbox.waiting[code] = (task["task_id"], body)
            await resend()
        while code in outbox.waiting:
            if not await resend():
                await asyncio.sleep(0.1)
    finally:
        connection.close()


def _settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        core=CoreSettings(data_dir=tmp_path / "data"),
        database=DatabaseSettings(url=database_url),
        blobs=BlobSettings(url=str(tmp_path / "blobs")),
    )


def test_kill_9_loses_no_acknowledged_answer_and_pays_none_twice(
    tmp_path: Path, database_url: str
) -> None:
    seed_value = random.randrange(2**32)
    draws = random.Random(seed_value)
    settings = _settings(tmp_path, database_url)
    codes = seed(settings, tasks=600, workers=WORKERS)
    close_engine(database_url)
    port = free_port()
    server = Server(settings, 2, port, tmp_path / "serve-1.log")
    outbox = Outbox()
    before_kill: dict[str, int] = {}

    async def scenario() -> None:
        nonlocal server
        stop = asyncio.Event()
        workers = [asyncio.create_task(_work(server.url, c, outbox, stop)) for c in codes]
        await asyncio.sleep(draws.uniform(0.5, 2.5))  # somewhere in the middle of the work
        server.kill()
        before_kill["acknowledged"] = len(outbox.acknowledged)
        before_kill["waiting"] = len(outbox.waiting)
        server = Server(settings, 2, port, tmp_path / "serve-2.log")
        await asyncio.get_running_loop().run_in_executor(None, server.wait_ready)
        await asyncio.sleep(1.0)  # work after the restart
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=30)

    try:
        server.wait_ready()
        asyncio.run(scenario())
    finally:
        server.stop()
    where = f"(seed {seed_value}; {before_kill})"
    assert before_kill["acknowledged"] > 0, f"the kill came before any answer {where}"
    assert not outbox.waiting, where
    db = open_engine(database_url)
    a, led, w = schema.answers, schema.ledger, schema.workers
    with db.connect() as conn:
        stored = dict(
            conn.execute(
                sa.select(a.c.idempotency_key, sa.func.count()).group_by(a.c.idempotency_key)
            )
            .tuples()
            .all()
        )
        paid = dict(
            conn.execute(sa.select(led.c.answer_id, sa.func.count()).group_by(led.c.answer_id))
            .tuples()
            .all()
        )
        answer_ids = conn.execute(sa.select(a.c.id).where(a.c.kind != "skip")).scalars().all()
        counted = conn.execute(
            sa.select(w.c.id, w.c.answers_done, sa.func.count(a.c.id))
            .join(a, a.c.worker_id == w.c.id)
            .where(a.c.kind != "skip")
            .group_by(w.c.id, w.c.answers_done)
        ).all()
    assert {k for k in outbox.acknowledged if stored.get(k) != 1} == set(), where
    assert len(stored) >= len(outbox.acknowledged) > before_kill["acknowledged"], where
    # One payment per answer: none doubled by a resend, none missing.
    assert {i: paid.get(i, 0) for i in answer_ids if paid.get(i, 0) != 1} == {}, where
    assert set(paid) == set(answer_ids), where
    assert [(r[0], r[1], r[2]) for r in counted if r[1] != r[2]] == [], where
