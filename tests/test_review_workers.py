"""Workers' side of the review app: invite + PIN sign-in and its throttle, idle sessions,
language, preloading the next task, column mode, and the worker's own page."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kerani.core.settings import Settings
from kerani.people.workers import invite_worker, session_person
from kerani.review_ui.app import create_app
from kerani.review_ui.i18n import catalog
from kerani.review_ui.web import COOKIE
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import form_token, seed_page

GUESSES = [
    ("postcode", "postcode", "4O100", 99.0),
    ("city", "text", "SHAH ALAM", 40.0),
    ("full_name", "text", "SITI AMINAH", 50.0),
]


@pytest.fixture
def client(settings: Settings, stores: Stores) -> TestClient:
    return TestClient(create_app(settings, stores), follow_redirects=False)


def join(
    client: TestClient,
    stores: Stores,
    name: str = "siti",
    pin: str = "402917",
    code: str = "",
    practised: bool = True,
) -> int:
    """Invite a worker (or use `code`) and join as them; return their worker number.

    Joining leads to the introduction and practice; `practised` then counts them as having
    passed it (the practice round is tests/test_onboarding's)."""
    number, code = invite_worker(stores.db, name, 14) if not code else (0, code)
    typed = code.lower().replace("-", " ")  # typed on a phone: case and spacing don't matter
    response = anon_post(client, "/join", {"invite": typed, "pin": pin, "pin_again": pin})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/welcome/1"
    if practised:
        w = schema.workers
        with stores.db.begin() as conn:
            conn.execute(w.update().where(w.c.name == name).values(practice_passed_at=utcnow()))
    return number


def anon_post(client: TestClient, url: str, data: dict[str, str]) -> Any:
    """Post a form shown before sign-in, with its token."""
    return client.post(url, data=data | {"csrf": form_token(client)})


def test_forms_before_sign_in_need_their_token(client: TestClient, stores: Stores) -> None:
    number = join(client, stores)
    client.cookies.clear()
    # Another site posting the sign-in form (login CSRF) has no token: refused.
    r = client.post("/signin", data={"number": str(number), "pin": "402917"})
    assert r.status_code == 403 and COOKIE not in r.cookies
    r = client.post("/signin", data={"number": str(number), "pin": "402917", "csrf": "forged"})
    assert r.status_code == 403
    assert anon_post(client, "/signin", {"number": str(number), "pin": "402917"}).status_code == 303


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def test_invite_then_pin_sign_in(client: TestClient, stores: Stores) -> None:
    number, code = invite_worker(stores.db, "siti", 14)
    assert re.fullmatch(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}", code)  # no 0/O, 1/I/L
    join(client, stores, code=code)
    welcome = client.get("/me?welcome=1")
    assert f">{number}<" in welcome.text and "Welcome" in welcome.text
    client.cookies.clear()
    # The invite is used up: it cannot be used again to take over the account's PIN.
    again = anon_post(client, "/join", {"invite": code, "pin": "555123", "pin_again": "555123"})
    assert again.status_code == 403
    assert anon_post(client, "/signin", {"number": str(number), "pin": "555123"}).status_code == 403
    ok = anon_post(client, "/signin", {"number": str(number), "pin": "402917"})
    assert ok.status_code == 303 and COOKIE in ok.cookies
    assert client.get("/review").status_code == 200


def test_weak_or_mistyped_pins_and_bad_invites_are_refused(
    client: TestClient, stores: Stores
) -> None:
    _, code = invite_worker(stores.db, "siti", 14)
    for pin, again, key in [
        ("1234", "1234", "pin_digits"),
        ("111111", "111111", "pin_easy"),
        ("123456", "123456", "pin_easy"),
        ("402917", "402918", "pin_mismatch"),
    ]:
        r = anon_post(client, "/join", {"invite": code, "pin": pin, "pin_again": again})
        assert r.status_code == 400 and catalog("en")[key] in r.text
    r = anon_post(client, "/join", {"invite": "ABCD-EFGH", "pin": "402917", "pin_again": "402917"})
    assert r.status_code == 403 and "invite code is not known" in r.text
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update().values(invite_expires_at=utcnow() - timedelta(minutes=1))
        )
    r = anon_post(client, "/join", {"invite": code, "pin": "402917", "pin_again": "402917"})
    assert r.status_code == 403  # expired


def test_pin_guessing_is_locked_out(client: TestClient, stores: Stores, settings: Settings) -> None:
    number = join(client, stores)
    client.cookies.clear()
    for _ in range(settings.review.signin_max_failures):
        r = anon_post(client, "/signin", {"number": str(number), "pin": "000001"})
        assert r.status_code == 403 and "do not match" in r.text
    # Locked: even the right PIN is refused until the lock ends, and the page says so.
    r = anon_post(client, "/signin", {"number": str(number), "pin": "402917"})
    assert r.status_code == 429 and "Too many tries" in r.text
    with stores.db.begin() as conn:
        conn.execute(
            schema.signin_failures.update().values(locked_until=utcnow() - timedelta(seconds=1))
        )
    assert anon_post(client, "/signin", {"number": str(number), "pin": "402917"}).status_code == 303


def test_many_workers_tried_from_one_address_lock_the_address(
    client: TestClient, stores: Stores, settings: Settings
) -> None:
    for n in range(settings.review.signin_ip_max_failures):
        anon_post(client, "/signin", {"number": str(1000 + n), "pin": "402917"})
    r = anon_post(client, "/signin", {"number": "1", "pin": "402917"})
    assert r.status_code == 429


def test_idle_session_signs_out(client: TestClient, stores: Stores, settings: Settings) -> None:
    join(client, stores)
    cookie = client.cookies[COOKIE]
    later = utcnow() + timedelta(minutes=settings.review.session_idle_minutes + 1)
    with pytest.raises(Exception, match="please sign in"):
        session_person(stores.db, cookie, settings.review.session_idle_minutes, now=later)
    # Ended for good: the next request goes to sign-in.
    assert client.get("/me").headers["location"] == "/signin"


def test_language_is_chosen_and_remembered(client: TestClient, stores: Stores) -> None:
    # Before sign-in: the browser's preference, then the cookie the switch sets.
    assert "Log masuk" in client.get("/signin", headers={"accept-language": "ms-MY,ms"}).text
    r = anon_post(client, "/language", {"lang": "ms", "next": "https://evil.example/"})
    assert r.headers["location"] == "/"  # no open redirect
    assert "Nombor pekerja" in client.get("/signin").text
    client.cookies.clear()
    join(client, stores)
    me = client.get("/me")
    assert "My work" in me.text
    r = client.post("/language", data={"lang": "ms", "next": "/me", "csrf": csrf_of(me.text)})
    assert r.headers["location"] == "/me"
    client.cookies.delete("kerani_lang")  # remembered with the worker, not only the cookie
    assert "Kerja saya" in client.get("/me").text
    # Without the session's CSRF token the choice is refused.
    bad = client.post("/language", data={"lang": "en", "next": "/me", "csrf": "x"})
    assert bad.status_code == 403


def test_every_message_exists_in_both_languages() -> None:
    en, ms = catalog("en"), catalog("ms")
    assert set(en) == set(ms)
    assert all(ms[k].strip() for k in ms)
    for key in en:  # placeholders must match, or a Malay page would crash or lose a figure
        assert set(re.findall(r"{(\w+)}", en[key])) == set(re.findall(r"{(\w+)}", ms[key])), key
    used = set()
    from pathlib import Path

    for template in (Path(__file__).parents[1] / "review_ui" / "templates").glob("*.html"):
        used |= set(re.findall(r't\("(\w+)"\s*[,)]', template.read_text()))
    assert used and used <= set(en), used - set(en)


def test_answer_by_script_returns_the_task_after_next(client: TestClient, stores: Stores) -> None:
    seed_page(stores, GUESSES)
    join(client, stores)
    page = client.get("/review").text
    upcoming = re.search(r'id="upcoming">(.*?)</script>', page, re.S).group(1)  # type: ignore[union-attr]
    first = re.search(r'action="/review/([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert first not in upcoming and '"ocr_text"' in upcoming  # the next task, preloaded
    assert re.search(r'src="data:image/(png|webp);base64,', page)  # the snippet comes inline
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    data = {"csrf": csrf_of(page), "idempotency_key": key, "value": "40100", "action": "value"}
    reply = client.post(f"/review/{first}", data=data, headers={"accept": "application/json"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["recorded"] is True and "1 done" in body["progress"]
    held = [t["task_id"] for t in body["upcoming"]]
    assert len(held) == 2 and first not in held and held[0] in upcoming  # the other two
    # A reload in the middle of a task keeps its lease: the same task is shown again.
    again = client.get("/review").text
    assert f'action="/review/{held[0]}"' in again
    # Replaying the same answer records nothing more.
    replay = client.post(f"/review/{first}", data=data, headers={"accept": "application/json"})
    assert replay.json()["recorded"] is False
    with stores.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.answers)).scalar_one() == 1


def test_a_column_settles_many_snippets_in_one_submit(
    client: TestClient, stores: Stores, settings: Settings
) -> None:
    lines = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 50.0) for i in range(20)]
    seed_page(stores, lines, template="receipt")
    seed_page(stores, [("postcode", "postcode", "4O100", 40.0)])
    join(client, stores)
    page = client.get("/column").text
    task_ids = re.findall(r'name="task_id" value="([^"]+)"', page)
    values = re.findall(r'name="value" value="([^"]*)"', page)
    size = min(settings.review.column_size, settings.crowd.max_fields_per_document)
    assert len(task_ids) == size and all(v.startswith("TOTAL") for v in values)  # one type
    assert "Postcode" not in page
    fixed = list(values)
    fixed[2] = "TOTAL 2.50"
    form = {
        "csrf": csrf_of(page),
        "column_key": re.search(r'name="column_key" value="([^"]+)"', page).group(1),  # type: ignore[union-attr]
        "task_id": task_ids,
        "value": fixed,
        "unreadable": ["4"],
    }
    assert client.post("/column", data=form).status_code == 303
    assert client.post("/column", data=form).status_code == 303  # a double tap adds nothing
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(schema.answers.c.task_id, schema.answers.c.kind, schema.answers.c.value)
        ).all()
        paid = conn.execute(select(func.count()).select_from(schema.ledger)).scalar_one()
    by_task = {r.task_id: (r.kind, r.value) for r in rows}
    assert len(rows) == len(task_ids) == paid
    assert by_task[task_ids[2]] == ("value", "TOTAL 2.50")
    assert by_task[task_ids[4]] == ("unreadable", "")
    assert by_task[task_ids[0]] == ("value", values[0])


def test_my_work_shows_tasks_and_earnings(
    client: TestClient, stores: Stores, settings: Settings
) -> None:
    seed_page(stores, GUESSES)
    join(client, stores)
    for _ in range(2):
        page = client.get("/review").text
        task = re.search(r'action="/review/([^"]+)"', page).group(1)  # type: ignore[union-attr]
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        client.post(
            f"/review/{task}",
            data={"csrf": csrf_of(page), "idempotency_key": key, "value": "X", "action": "value"},
        )
    me = client.get("/me").text
    rate = settings.crowd.rate_sen_field
    assert re.search(r'id="tasks-done">2<', me)
    assert f'id="earned-total">RM 0.{2 * rate:02d}<' in me
    assert "Not known yet" in me  # no gold answered yet: no accuracy claimed


def test_operators_cannot_use_worker_pages_nor_workers_operator_pages(
    client: TestClient, stores: Stores
) -> None:
    join(client, stores)
    assert client.get("/status").status_code == 403
    assert client.get("/batches/abc/report").status_code == 403


def test_errors_a_worker_meets_are_in_their_language(client: TestClient, stores: Stores) -> None:
    seed_page(stores, GUESSES)
    number = join(client, stores)
    me = client.get("/me").text
    client.post("/language", data={"lang": "ms", "next": "/me", "csrf": csrf_of(me)})
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update().where(schema.workers.c.id == number).values(quarantined=True)
        )
    page = client.get("/review")
    assert page.status_code == 403 and "Akaun anda digantung" in page.text
    assert "Log keluar" in page.text  # the error page keeps the worker's header
