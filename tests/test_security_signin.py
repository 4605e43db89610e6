"""Sign-in under attack, against a real server: parallel guesses cannot outrun the lock-out
on any sign-in route, a forged X-Forwarded-For does not dodge the address lock, PIN checks
(16 MiB of scrypt each) run a few at a time, and sessions are rotated, ended and purged."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from kerani.core.settings import Settings
from kerani.people import workers
from kerani.people.rate_limits import attempt_failed, reserve_attempt
from kerani.people.workers import add_person, invite_worker, join_with_invite
from kerani.review_ui import signin
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.review_ui.web import COOKIE
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import form_token, sign_in_with_code

PIN = "402917"


class Counted:
    """A stand-in for a checking function that counts its calls and how many ran at once.

    It holds each call a moment, so that parallel requests overlap inside it: without a
    reservation before the check, every one of them would get in before the first failure
    is recorded.
    """

    def __init__(self, real: Callable[..., Any], hold: float = 0.2) -> None:
        self.real, self.hold = real, hold
        self.calls = self.running = self.most_at_once = 0
        self.lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(self.hold)
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def serve(settings: Settings, stores: Stores) -> Iterator[Callable[[], str]]:
    """Start the app on a real uvicorn server (after the test has set its settings)."""
    servers: list[BackgroundServer] = []

    def start() -> str:
        server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port())
        servers.append(server.start())
        return server.url

    yield start
    for server in servers:
        server.stop()


def post_form(
    url: str, path: str, form: dict[str, str], headers: dict[str, str] | None = None
) -> httpx.Response:
    """One visitor: fetch the form (its token cookie), then post it."""
    with httpx.Client(base_url=url, follow_redirects=False, timeout=120) as client:
        token = form_token(client)
        return client.post(path, data=form | {"csrf": token}, headers=headers or {})


def post_in_parallel(url: str, path: str, forms: list[dict[str, str]]) -> list[int]:
    """Post every form at once, each from its own visitor; their status codes."""
    start = threading.Barrier(len(forms))

    def one(form: dict[str, str]) -> int:
        with httpx.Client(base_url=url, follow_redirects=False, timeout=120) as client:
            token = form_token(client)
            start.wait()  # every visitor has its form: post them all at the same moment
            return client.post(path, data=form | {"csrf": token}).status_code

    with ThreadPoolExecutor(len(forms)) as pool:
        return list(pool.map(one, forms))


def joined_worker(stores: Stores, name: str = "siti") -> int:
    """A worker who has joined with PIN; their number."""
    number, invite = invite_worker(stores.db, name, 14)
    join_with_invite(stores.db, invite, PIN, PIN)
    return number


# Each sign-in route: what it checks (the function to count), its limit's setting, a wrong
# and a right form.
ROUTES = ["/signin", "/signin/code", "/join"]


@pytest.mark.parametrize("route", ROUTES)
def test_parallel_guesses_cannot_outrun_the_lock_out(
    settings: Settings,
    stores: Stores,
    serve: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    settings.review.signin_max_failures = 5
    settings.review.signin_ip_max_failures = 5 if route != "/signin" else 100
    limit = 5
    if route == "/signin":
        number = joined_worker(stores)
        checks = Counted(workers.pin_matches)
        monkeypatch.setattr(workers, "pin_matches", checks)
        wrong = [{"number": str(number), "pin": f"{100000 + i}"} for i in range(20)]
        right = {"number": str(number), "pin": PIN}
    elif route == "/signin/code":
        code = add_person(stores.db, "opi", "operator")
        checks = Counted(signin.person_by_code)
        monkeypatch.setattr(signin, "person_by_code", checks)
        wrong = [{"code": f"not-the-code-{i}"} for i in range(20)]
        right = {"code": code}
    else:
        _, invite = invite_worker(stores.db, "siti", 14)
        checks = Counted(signin.join_with_invite)
        monkeypatch.setattr(signin, "join_with_invite", checks)
        wrong = [{"invite": f"ABCD-EF{i:02d}", "pin": PIN, "pin_again": PIN} for i in range(20)]
        right = {"invite": invite, "pin": PIN, "pin_again": PIN}
    url = serve()
    statuses = post_in_parallel(url, route, wrong)
    # No more guesses were checked than the limit allows, however many came at once.
    assert checks.calls <= limit, f"{checks.calls} guesses checked against a limit of {limit}"
    assert sorted(set(statuses)) == [403, 429]
    assert statuses.count(403) == checks.calls
    # Locked: every further try is refused, the right PIN or code too, without a check.
    calls = checks.calls
    assert post_in_parallel(url, route, [right, *wrong[:3]]) == [429] * 4
    assert checks.calls == calls


def test_sign_ins_that_succeed_count_nothing_against_the_address(
    settings: Settings, stores: Stores, serve: Callable[[], str]
) -> None:
    settings.review.signin_ip_max_failures = 3
    numbers = [joined_worker(stores, f"w{i}") for i in range(4)]
    url = serve()
    # More workers than the address's limit sign in from one place (a telecentre): each
    # attempt is reserved before its check, and given back when the PIN was right.
    for number in numbers:
        response = post_form(url, "/signin", {"number": str(number), "pin": PIN})
        assert response.status_code == 303
    wrong = post_form(url, "/signin", {"number": str(numbers[0]), "pin": "999999"})
    assert wrong.status_code == 403


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_a_forged_forwarded_for_does_not_dodge_the_address_lock(
    settings: Settings, stores: Stores, serve: Callable[[], str], trusted: str
) -> None:
    settings.review.signin_ip_max_failures = 3
    settings.review.trusted_proxies = trusted
    url = serve()
    for i in range(3):
        forged = {"X-Forwarded-For": f"203.0.113.{i}"}
        assert post_form(url, "/signin/code", {"code": "guess"}, forged).status_code == 403
    again = post_form(url, "/signin/code", {"code": "guess"}, {"X-Forwarded-For": "198.51.100.7"})
    if trusted:
        # Behind a proxy the operator named, the address it forwards is the visitor's.
        assert again.status_code == 403
    else:
        # Nobody is trusted by default: every try came from 127.0.0.1, which is now locked.
        assert again.status_code == 429


def test_pin_checks_run_a_few_at_a_time(
    settings: Settings, stores: Stores, serve: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.review.signin_max_failures = 100
    settings.review.signin_ip_max_failures = 100
    assert settings.review.pin_checks_at_once == 2
    number = joined_worker(stores)
    invites = [invite_worker(stores.db, f"new{i}", 14)[1] for i in range(4)]
    # Checking a PIN and hashing a new one both cost 16 MiB of scrypt.
    scrypt = Counted(workers.pin_matches)
    monkeypatch.setattr(workers, "pin_matches", scrypt)
    monkeypatch.setattr(workers, "hash_pin", Counted(workers.hash_pin))

    def most_at_once() -> int:
        return max(scrypt.most_at_once, workers.hash_pin.most_at_once)  # type: ignore[attr-defined]

    url = serve()
    statuses = post_in_parallel(url, "/signin", [{"number": str(number), "pin": "999999"}] * 8)
    assert statuses == [403] * 8 and scrypt.calls == 8
    forms = [{"invite": code, "pin": PIN, "pin_again": PIN} for code in invites]
    assert post_in_parallel(url, "/join", forms) == [303] * 4
    assert most_at_once() <= 2, f"{most_at_once()} PIN checks ran at once"


def failures_of(stores: Stores, key: str) -> int:
    f = schema.signin_failures
    with stores.db.connect() as conn:
        return int(conn.execute(select(f.c.failures).where(f.c.key == key)).scalar_one())


def test_a_lock_ends_and_old_failures_lapse(stores: Stores) -> None:
    t0, minute = utcnow(), timedelta(minutes=1)
    keys = {"worker:7": 3}
    for _ in range(3):
        assert reserve_attempt(stores.db, keys, 15, now=t0) == 0
        attempt_failed(stores.db, keys, 15, now=t0)
    assert reserve_attempt(stores.db, keys, 15, now=t0 + minute) == 14
    # Once the lock has ended the worker has every try again, and then is locked again.
    later = t0 + 15 * minute
    for _ in range(3):
        assert reserve_attempt(stores.db, keys, 15, now=later) == 0
        attempt_failed(stores.db, keys, 15, now=later)
    assert reserve_attempt(stores.db, keys, 15, now=later) == 15
    # Failures older than the window do not add up to a lock.
    spread = {"ip:192.0.2.1": 2}
    for when in (t0, t0 + 16 * minute, t0 + 32 * minute):
        assert reserve_attempt(stores.db, spread, 15, now=when) == 0
        attempt_failed(stores.db, spread, 15, now=when)
    assert failures_of(stores, "ip:192.0.2.1") == 1


def test_a_refused_attempt_counts_against_no_key(stores: Stores) -> None:
    keys = {"ip:192.0.2.1": 10, "worker:7": 1}
    assert reserve_attempt(stores.db, keys, 15) == 0
    attempt_failed(stores.db, keys, 15)
    # The worker is locked: the address's place, taken first, is given back with it.
    assert reserve_attempt(stores.db, keys, 15) == 15
    assert failures_of(stores, "ip:192.0.2.1") == 1


# ---- sessions -------------------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings, stores: Stores) -> TestClient:
    return TestClient(create_app(settings, stores), follow_redirects=False)


def sessions_of(stores: Stores, person_id: int) -> int:
    s = schema.sessions
    with stores.db.connect() as conn:
        return int(
            conn.execute(select(func.count()).where(s.c.worker_id == person_id)).scalar_one()
        )


def add_session(stores: Stores, person_id: int, cookie: str, ends_in: timedelta) -> None:
    """A session row as an earlier sign-in (or an older Kerani) left it."""
    with stores.db.begin() as conn:
        conn.execute(
            insert(schema.sessions).values(
                id=hashlib.sha256(cookie.encode()).hexdigest(),
                worker_id=person_id,
                csrf_token="x",
                expires_at=utcnow() + ends_in,
                last_seen_at=utcnow(),
            )
        )


def test_signing_in_again_ends_the_other_session(settings: Settings, stores: Stores) -> None:
    app = create_app(settings, stores)
    code = add_person(stores.db, "opi", "operator")
    first, second = (TestClient(app, follow_redirects=False) for _ in range(2))
    assert sign_in_with_code(first, code).status_code == 303
    assert first.get("/status").status_code == 200
    assert sign_in_with_code(second, code).status_code == 303
    # One live session per person: the one on the other device (a shared PC) is over.
    assert first.get("/status").headers["location"] == "/signin"
    assert second.get("/status").status_code == 200
    assert sessions_of(stores, 1) == 1


def test_signing_out_ends_every_session_of_the_person(client: TestClient, stores: Stores) -> None:
    code = add_person(stores.db, "opi", "operator")
    assert sign_in_with_code(client, code).status_code == 303
    add_session(stores, 1, "left-open-elsewhere", timedelta(hours=1))
    page = client.get("/status").text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert client.post("/signout", data={"csrf": csrf}).status_code == 303
    assert sessions_of(stores, 1) == 0


def test_expired_sessions_are_purged_at_sign_in(client: TestClient, stores: Stores) -> None:
    other = add_person(stores.db, "ana", "worker", practised=True)
    code = add_person(stores.db, "opi", "operator")
    add_session(stores, 1, "long-gone", -timedelta(hours=1))
    add_session(stores, 1, "still-good", timedelta(hours=1))
    assert other and code
    assert sign_in_with_code(client, code).status_code == 303
    # Ana's expired session is gone; her live one (another person's) is left alone.
    assert sessions_of(stores, 1) == 1
    assert sessions_of(stores, 2) == 1
    assert COOKIE in client.cookies
