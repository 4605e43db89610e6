"""`kerani bench load`: many simulated workers against a real `kerani serve`, over HTTP.

A fresh database (a SQLite file, or a new schema in a PostgreSQL database) is seeded with
pages of open line tasks, each line's snippet a small PNG of its text; `kerani serve` then
starts as a subprocess on loopback with the chosen number of processes, and N simulated
workers, each with their own access code and their own keep-alive connection, loop
claim → snippet → answer through the JSON API for S seconds (no think time unless asked:
the hardest load N workers can make). The answer is the line's true text, read off the
seed like a simulated worker reads a snippet (kerani.evaluation.crowd_sim).

Afterwards, from the database: every answer the server acknowledged (2xx) must be stored
(`lost_answers` counts those that are not), and no task may have been leased to two
workers at once (`double_assignments`, from the audit log's claims and answers in the
order they were written). The figures come from simulated workers.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from PIL import Image, ImageDraw, ImageFont
from pydantic import SecretStr

from kerani.benchmarks.queue_bench import DEFAULT_POSTGRES, seed_tasks, seen_on_snippet
from kerani.core.errors import BadInputError
from kerani.core.settings import BlobSettings, CoreSettings, DatabaseSettings, Settings
from kerani.core.vocabulary import Role
from kerani.people.workers import add_person
from kerani.storage import schema
from kerani.storage.blobs import open_blob_store
from kerani.storage.database import close_engine, open_engine

FIELDS_PER_PAGE = 20
KINDS = ("claim", "snippet", "answer")
# What a progress callback gets: seconds elapsed and requests done so far.
Progress = Callable[[float, int], None]


@dataclass
class Tally:
    """What the simulated workers saw: latencies by request kind, errors, answers acked."""

    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: dict[str, int] = field(default_factory=dict)
    acknowledged: dict[str, str] = field(default_factory=dict)  # idempotency key: task id
    not_recorded: int = 0  # acknowledged with recorded false (a replay the server refused)
    empty_claims: int = 0  # 204: nothing to do

    @property
    def requests(self) -> int:
        """Requests that got an answer the bench counts (errors aside)."""
        return sum(len(v) for v in self.latencies_ms.values())

    def error(self, kind: str, what: str) -> None:
        """Count one failed request of `kind` (an HTTP status or an exception's name)."""
        key = f"{kind}:{what}"
        self.errors[key] = self.errors.get(key, 0) + 1


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `values`, nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def snippet_png(text: str) -> bytes:
    """A greyscale PNG of one printed line, about the size of a real receipt snippet."""
    font = ImageFont.load_default(size=22)
    image = Image.new("L", (16 + int(font.getlength(text)), 36), 245)
    ImageDraw.Draw(image).text((8, 5), text, fill=20, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


class ScratchDatabase:
    """Where one run's state lives: a new SQLite file, or a new schema in PostgreSQL.

    `database` is "sqlite", "postgresql" (the local `test` database) or a PostgreSQL URL.
    """

    def __init__(self, database: str, folder: Path) -> None:
        self.admin_url: str | None = None
        if database == "postgresql":
            database = os.environ.get("KERANI_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
        if database == "sqlite":
            self.url = f"sqlite:///{folder / 'load.db'}"
        elif database.startswith("postgresql"):
            self.admin_url, self.schema = database, f"kerani_load_{secrets.token_hex(5)}"
            admin = sa.create_engine(database)
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            admin.dispose()
            joiner = "&" if "?" in database else "?"
            self.url = f"{database}{joiner}options=-csearch_path%3D{self.schema}"
        else:
            raise BadInputError(
                f"--database must be sqlite, postgresql or a postgresql:// URL, not {database!r}"
            )

    @property
    def kind(self) -> str:
        """postgresql or sqlite."""
        return "postgresql" if self.url.startswith("postgresql") else "sqlite"

    def drop(self) -> None:
        """Drop the PostgreSQL schema made for the run (a SQLite file goes with its folder)."""
        close_engine(self.url)
        if self.admin_url is not None:
            admin = sa.create_engine(self.admin_url)
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            admin.dispose()


def seed(settings: Settings, tasks: int, workers: int) -> list[str]:
    """Pages of open line tasks with their snippets, and proven workers; their access codes."""
    db = open_engine(settings.database_url)
    blobs = open_blob_store(settings)
    pages = max(1, -(-tasks // FIELDS_PER_PAGE))
    seed_tasks(db, pages, FIELDS_PER_PAGE)
    for j in range(FIELDS_PER_PAGE):
        blobs.put(f"load/line_{j:03d}.png", snippet_png(seen_on_snippet(f"line_{j:03d}")))
    f = schema.fields
    with db.begin() as conn:
        # line_007's snippet is load/line_007.png: the key is the name's own.
        conn.execute(f.update().values(snippet_key=sa.literal("load/") + f.c.name + ".png"))
    # Proven: every answer is a vote, so fields settle and tasks move on as in production.
    return [
        add_person(db, f"load-{i}", Role.WORKER, proven=True, practised=True)
        for i in range(workers)
    ]


class Server:
    """`kerani serve` as a subprocess in its own process group, on a loopback port."""

    def __init__(self, settings: Settings, processes: int, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        # Settings go to the server through the environment (a database URL may hold a
        # password), as `kerani serve` hands them to its own processes.
        env = os.environ | {
            "KERANI_DATA_DIR": str(settings.core.data_dir),
            "KERANI_DB_URL": settings.database_url,
            "KERANI_BLOB_URL": settings.blob_url,
        }
        command = [sys.executable, "-m", "kerani", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--workers", str(processes)]
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until the server answers; RuntimeError with its log's end if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/signin", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"kerani serve did not start on {self.url}:\n{tail}")

    def stop(self) -> None:
        """Stop every process of the server as Ctrl+C would, and wait for them."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def kill(self) -> None:
        """kill -9 every process of the server at once, as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass(frozen=True)
class Reply:
    """An HTTP response as the simulated workers read it."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body, parsed as JSON."""
        return json.loads(self.body)


class Disconnected(ConnectionError):
    """The server closed the connection instead of answering (a dropped keep-alive)."""


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams, as lean as a client can be.

    A load generator must cost far less CPU than the server it measures: httpx costs about
    2-3 ms of CPU a request at these loads, as much as half of what the server spends,
    on the same two cores. This speaks just enough HTTP/1.1 for Kerani's API (bodies by
    Content-Length or chunked); `--client httpx` uses httpx instead.
    """

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        fixed = {"Host": parts.netloc, "Accept-Encoding": "gzip", **headers}
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> Reply:
        """Send one request and read its response (a new connection if the last closed)."""
        async with asyncio.timeout(self.timeout):
            return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: Any) -> Reply:
        if self.reader is not None and self.reader.at_eof():
            self.close()  # the server closed it while idle (keep-alive timeout): a new one
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        payload = b"" if body is None else json.dumps(body).encode()
        kind = "Content-Type: application/json\r\n" if body is not None else ""
        head = (
            f"{method} {path} HTTP/1.1\r\n{self.fixed}{kind}Content-Length: {len(payload)}\r\n\r\n"
        )
        try:
            writer.write(head.encode() + payload)
            await writer.drain()
            status_line = await reader.readline()
            if not status_line:
                raise Disconnected("the server closed the connection")
            status = int(status_line.split(b" ", 2)[1])
            headers: dict[bytes, bytes] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            data = await self._body(reader, headers)
        except BaseException:
            self.close()
            raise
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        if headers.get(b"content-encoding") == b"gzip":
            data = gzip.decompress(data)
        return Reply(status, data)

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunks = []
            while size := int((await reader.readline()).split(b";")[0], 16):
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readline()  # the empty trailer
            return b"".join(chunks)
        return await reader.readexactly(int(headers.get(b"content-length", b"0")))

    def close(self) -> None:
        """Close the connection; the next request opens a new one."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpxConnection:
    """The same, through httpx (its own keep-alive connection per worker)."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.client = httpx.AsyncClient(
            base_url=url, headers=headers, limits=limits, timeout=timeout
        )

    async def request(self, method: str, path: str, body: Any = None) -> Reply:
        """Send one request and read its response."""
        response = await self.client.request(method, path, json=body)
        return Reply(response.status_code, response.content)

    def close(self) -> None:
        """Nothing to do here: aclose() does it."""

    async def aclose(self) -> None:
        """Close the client."""
        await self.client.aclose()


CLIENTS: dict[str, type[RawConnection | HttpxConnection]] = {
    "raw": RawConnection,
    "httpx": HttpxConnection,
}


async def _one_worker(
    url: str, code: str, deadline: float, tally: Tally, options: DriveOptions
) -> None:
    """One simulated worker: claim → snippet → answer until the deadline, on its own
    keep-alive connection; a failed answer is retried with its idempotency key."""
    headers = {"Authorization": f"Bearer {code}"}
    connection = CLIENTS[options.client](url, headers, options.timeout)

    async def call(kind: str, method: str, path: str, body: Any = None) -> Reply | None:
        t0 = time.perf_counter()
        try:
            reply = await connection.request(method, path, body)
        except (
            OSError,
            TimeoutError,
            ValueError,
            asyncio.IncompleteReadError,
            httpx.HTTPError,
        ) as e:
            tally.error(kind, type(e).__name__)
            return None
        if reply.status >= 300:
            tally.error(kind, str(reply.status))
            return None
        if t0 >= options.measured_from:  # the warm-up's requests are not timed
            tally.latencies_ms[kind].append((time.perf_counter() - t0) * 1000)
        return reply

    # People look at a snippet for longer or shorter: a fixed pause would keep every worker
    # in step with the others, coming back all at once, and so would a common start.
    draws = random.Random()
    if options.think_s:
        await asyncio.sleep(draws.uniform(0, options.think_s))
    try:
        while time.monotonic() < deadline:
            claim = await call("claim", "POST", "/api/tasks/claim")
            if claim is None or claim.status == 204:
                tally.empty_claims += claim is not None
                await asyncio.sleep(0.5)  # nothing to do, or a failure: look again soon
                continue
            task = claim.json()
            snippet = await call("snippet", "GET", task["snippet_url"])
            if snippet is not None and not snippet.body:
                tally.error("snippet", "empty")
            if options.think_s:
                await asyncio.sleep(options.think_s * draws.uniform(0.5, 1.5))
            key = secrets.token_urlsafe(12)
            body = {
                "kind": "value",
                "value": seen_on_snippet(task["field"]),
                "idempotency_key": key,
                "prefilled": task["ocr_guess"],
            }
            # As the page's outbox does: the same key again until the server has it.
            for _try in range(3):
                answer = await call("answer", "POST", f"/api/tasks/{task['task_id']}/answer", body)
                if answer is not None:
                    tally.acknowledged[key] = task["task_id"]
                    tally.not_recorded += not answer.json().get("recorded", False)
                    break
                await asyncio.sleep(0.2)
    finally:
        connection.close()
        if isinstance(connection, HttpxConnection):
            await connection.aclose()


@dataclass(frozen=True)
class DriveOptions:
    """How the simulated workers work: their client, think time, timeout, warm-up end."""

    client: str = "raw"
    think_s: float = 0.0
    warmup_s: float = 0.0
    timeout: float = 30.0
    measured_from: float = 0.0  # perf_counter() from which requests are timed (drive sets it)


async def drive(
    url: str,
    codes: list[str],
    seconds: float,
    options: DriveOptions,
    progress: Progress | None = None,
    mark: Callable[[], None] | None = None,
) -> tuple[Tally, float]:
    """Run every worker for the warm-up then `seconds`; return the tally and the measured
    wall time (from the warm-up's end until the last worker finished the loop it was in).

    Requests started in the warm-up are not timed, nor counted in requests per second:
    the figures are of a server whose connections, pools and plans are warm. `mark` is
    called as the warm-up ends and once the last worker is done.
    """
    tally = Tally()
    start = time.monotonic()
    warm_at = start + options.warmup_s
    options = replace(options, measured_from=time.perf_counter() + options.warmup_s)
    deadline = warm_at + seconds
    workers = [
        asyncio.create_task(_one_worker(url, code, deadline, tally, options)) for code in codes
    ]
    marked = False
    while not all(w.done() for w in workers):
        await asyncio.wait(workers, timeout=min(0.5, max(0.01, warm_at - time.monotonic())))
        if not marked and time.monotonic() >= warm_at and mark is not None:
            mark()
            marked = True
        if progress is not None:
            progress(min(options.warmup_s + seconds, time.monotonic() - start), tally.requests)
    for w in workers:
        w.result()  # a bug in the bench itself surfaces here
    wall_s = time.perf_counter() - options.measured_from
    if mark is not None:
        if not marked:
            mark()
        mark()
    return tally, wall_s


def double_assignments(db: sa.Engine) -> int:
    """Claims of a task while another worker still held it (its claim not yet answered),
    in the order the audit log's rows were written (a claim's row is written in the
    transaction that takes the lease, an answer's in the one that gives it back)."""
    log = schema.audit_log
    holders: dict[str, set[int]] = {}
    doubled = 0
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(log.c.action, log.c.worker_id, log.c.task_id)
            .where(log.c.action.in_(("claim", "answer")))
            .order_by(log.c.id)
        )
        for action, worker_id, task_id in rows:
            held = holders.setdefault(task_id, set())
            if action == "claim":
                doubled += bool(held - {worker_id})
                held.add(worker_id)
            else:
                held.discard(worker_id)
    return doubled


def stored_keys(db: sa.Engine) -> dict[str, int]:
    """How many answers the database holds under each idempotency key."""
    a = schema.answers
    with db.connect() as conn:
        rows = conn.execute(
            sa.select(a.c.idempotency_key, sa.func.count()).group_by(a.c.idempotency_key)
        )
        return {str(k): int(n) for k, n in rows}


def process_ticks() -> dict[int, tuple[int, str, float]]:
    """Every process's parent, name and CPU time so far in clock ticks (Linux /proc)."""
    out: dict[int, tuple[int, str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        rest = text[text.rindex(")") + 2 :].split()
        # After the name: state, ppid, ... utime (14th field of the line), stime (15th).
        out[int(stat.parent.name)] = (int(rest[1]), name, float(rest[11]) + float(rest[12]))
    return out


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: the machine (busy, all), the server's processes, PostgreSQL's."""

    busy: float = 0.0
    total: float = 0.0
    server: float = 0.0
    postgres: float = 0.0
    client: float = 0.0

    @classmethod
    def take(cls, server_pid: int) -> CpuSample:
        """Read /proc now (zeros where there is none)."""
        tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        try:
            ticks = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return cls(client=time.process_time())
        idle = ticks[3] + ticks[4]
        processes = process_ticks()
        tree, grew = {server_pid}, True
        while grew:  # the server's processes: its own and their descendants
            more = {pid for pid, (ppid, _n, _t) in processes.items() if ppid in tree} - tree
            tree |= more
            grew = bool(more)
        server = sum(processes[pid][2] for pid in tree if pid in processes)
        postgres = sum(t for _pp, name, t in processes.values() if name.startswith("postgres"))
        return cls(
            (sum(ticks) - idle) / tick,
            sum(ticks) / tick,
            server / tick,
            postgres / tick,
            time.process_time(),
        )

    def since(self, start: CpuSample) -> dict[str, float | None]:
        """What was spent between `start` and this sample."""
        total = self.total - start.total
        return {
            "machine_cpu_busy_share": round((self.busy - start.busy) / total, 3) if total else None,
            "client_cpu_s": round(self.client - start.client, 1),
            "server_cpu_s": round(self.server - start.server, 1),
            # Every PostgreSQL process of the machine's server, whoever's queries it ran.
            "postgres_cpu_s": round(self.postgres - start.postgres, 1),
        }


def figures(tally: Tally, wall_s: float) -> dict[str, Any]:
    """Requests per second and latency percentiles, by request kind and overall."""
    every = [ms for kind in KINDS for ms in tally.latencies_ms[kind]]
    out: dict[str, Any] = {
        "requests": len(every),
        "requests_per_s": round(len(every) / wall_s, 1) if wall_s else 0.0,
        "p50_ms": round(percentile(every, 50), 1),
        "p99_ms": round(percentile(every, 99), 1),
        "max_ms": round(max(every, default=0.0), 1),
    }
    for kind in KINDS:
        values = tally.latencies_ms[kind]
        out[kind] = {
            "requests": len(values),
            "p50_ms": round(percentile(values, 50), 1),
            "p99_ms": round(percentile(values, 99), 1),
        }
    return out


def run(
    workers: int = 200,
    seconds: float = 60.0,
    database: str = "sqlite",
    processes: int | None = None,
    tasks: int | None = None,
    think_s: float = 0.0,
    warmup_s: float = 5.0,
    client: str = "raw",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Seed, serve, drive the workers, stop the server, count from the database."""
    if client not in CLIENTS:
        raise BadInputError(f"--client must be one of {', '.join(CLIENTS)}, not {client!r}")
    from kerani.review_ui.server import free_port

    processes = processes or Settings.load().serve.processes
    # Enough work that nobody runs dry: about twice what the fastest runs answered.
    tasks = tasks or max(1000, int(250 * seconds))
    with tempfile.TemporaryDirectory(prefix="kerani-load-") as tmp:
        folder = Path(tmp)
        scratch = ScratchDatabase(database, folder)
        try:
            settings = Settings(
                core=CoreSettings(data_dir=folder / "data"),
                database=DatabaseSettings(url=SecretStr(scratch.url)),
                blobs=BlobSettings(url=str(folder / "blobs")),
            )
            codes = seed(settings, tasks, workers)
            close_engine(scratch.url)  # the server's processes hold the connections now
            server = Server(settings, processes, free_port(), folder / "serve.log")
            try:
                server.wait_ready()
                samples: list[CpuSample] = []
                tally, wall_s = asyncio.run(
                    drive(
                        server.url,
                        codes,
                        seconds,
                        DriveOptions(client, think_s, warmup_s=warmup_s),
                        progress,
                        # CPU is read from the warm-up's end to the last request.
                        lambda: samples.append(CpuSample.take(server.process.pid)),
                    )
                )
            finally:
                server.stop()
            db = open_engine(scratch.url)
            stored = stored_keys(db)
            doubled = double_assignments(db)
        finally:
            scratch.drop()
    acked = tally.acknowledged
    cpu = samples[-1].since(samples[0])
    measured = figures(tally, wall_s)
    per_request = {
        f"{who}_cpu_ms_per_request": round(1000 * float(cpu[f"{who}_cpu_s"] or 0) / n, 2)
        for who in ("server", "postgres", "client")
        if (n := measured["requests"])
    }
    return {
        "database": scratch.kind,
        "processes": processes,
        "workers": workers,
        "seconds": seconds,
        "warmup_s": warmup_s,
        "think_s": think_s,
        "client": client,
        "tasks_seeded": -(-tasks // FIELDS_PER_PAGE) * FIELDS_PER_PAGE,
        **measured,
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(sorted(tally.errors.items())),
        "empty_claims": tally.empty_claims,
        "answers_acknowledged": len(acked),
        "answers_acknowledged_not_recorded": tally.not_recorded,
        "answers_stored": sum(1 for k in acked if stored.get(k, 0) >= 1),
        "answers_stored_twice": sum(1 for k in acked if stored.get(k, 0) > 1),
        "lost_answers": sum(1 for k in acked if k not in stored),
        "double_assignments": doubled,
        **cpu,
        **per_request,
        "cores": os.cpu_count(),
    }
