"""Account care: an operator resets a forgotten PIN (a new one-time code) or re-invites a
worker who never joined, sets a worker's language; a worker changes their own PIN."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from kerani.cli import app as cli
from kerani.core.errors import BadInputError, ConflictError, ForbiddenError, NotFoundError
from kerani.core.settings import Settings
from kerani.microtasks.standing import revoke
from kerani.people.workers import (
    add_person,
    change_pin,
    invite_or_reinvite,
    invite_worker,
    join_with_invite,
    person_by_code,
    person_by_pin,
    reinvite,
    reset_pin,
    session_person,
    set_worker_language,
    start_session,
)
from kerani.review_ui.app import create_app
from kerani.review_ui.i18n import catalog
from kerani.review_ui.web import COOKIE
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.stores import Stores, open_stores
from tests.factories import form_token, sign_in_with_code

PIN, NEW_PIN = "402917", "739164"
CODE = re.compile(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}")


def joined_worker(stores: Stores, name: str = "aminah") -> int:
    number, code = invite_worker(stores.db, name, 14)
    join_with_invite(stores.db, code, PIN, PIN)
    return number


def audit_details(stores: Stores) -> list[str]:
    log = schema.audit_log
    with stores.db.connect() as conn:
        return list(conn.execute(select(log.c.detail).order_by(log.c.id)).scalars())


def worker_row(stores: Stores, number: int) -> Any:
    w = schema.workers
    with stores.db.connect() as conn:
        return conn.execute(select(w).where(w.c.id == number)).one()


# ---- the library ------------------------------------------------------------------------------


def test_a_reset_pin_ends_the_old_pin_and_sessions_and_the_code_sets_a_new_one(
    stores: Stores,
) -> None:
    number = joined_worker(stores)
    operator = person_by_code(stores.db, add_person(stores.db, "ops", "operator")).id
    cookie, _ = start_session(stores.db, number, 8)
    code = reset_pin(stores.db, number, 3, operator)
    assert CODE.fullmatch(code.code) and code.worker_id == number and code.name == "aminah"
    assert abs(code.expires_at - (utcnow() + timedelta(days=3))) < timedelta(minutes=1)
    row = worker_row(stores, number)
    assert row.pin_hash is None and as_utc(row.invite_expires_at) == code.expires_at
    with pytest.raises(ForbiddenError):
        session_person(stores.db, cookie)  # signed out everywhere
    with pytest.raises(ForbiddenError):
        person_by_pin(stores.db, number, PIN)  # the old PIN is no more
    # The code is a one-time invite: /join sets the new PIN.
    assert join_with_invite(stores.db, code.code.lower(), NEW_PIN, NEW_PIN).id == number
    assert person_by_pin(stores.db, number, NEW_PIN).id == number
    with pytest.raises(ForbiddenError):
        join_with_invite(stores.db, code.code, "582046", "582046")  # used up
    # On record, by the operator, without the code.
    assert audit_details(stores) == [f"worker {number}: PIN reset, new one-time code"]
    with stores.db.connect() as conn:
        who = conn.execute(select(schema.audit_log.c.worker_id)).scalar_one()
    assert who == operator
    assert code.code.replace("-", "") not in " ".join(audit_details(stores))


def test_only_workers_not_revoked_have_their_pin_reset(stores: Stores, settings: Settings) -> None:
    staff = person_by_code(stores.db, add_person(stores.db, "Boss", "operator")).id
    agency = person_by_code(stores.db, add_person(stores.db, "JKM", "agency")).id
    for person in (staff, agency):
        for act in (reset_pin, reinvite):
            with pytest.raises(BadInputError, match="not a worker"):
                act(stores.db, person, 14)
        with pytest.raises(BadInputError, match="not a worker"):
            set_worker_language(stores.db, person, "ms")
    with pytest.raises(NotFoundError, match="no worker with number 999"):
        reset_pin(stores.db, 999, 14)
    gone = joined_worker(stores, "gone")
    revoke(stores.db, None, gone, settings.crowd)
    with pytest.raises(BadInputError, match="revoked"):
        reset_pin(stores.db, gone, 14)
    with pytest.raises(BadInputError, match="revoked"):
        reinvite(stores.db, gone, 14)
    assert worker_row(stores, gone).invite_hash is None


def test_reinvite_is_for_workers_who_have_not_joined(stores: Stores) -> None:
    number, first = invite_worker(stores.db, "siti", 14)
    again = reinvite(stores.db, number, 14)
    assert again.code != first
    with pytest.raises(ForbiddenError):
        join_with_invite(stores.db, first, PIN, PIN)  # the earlier code no longer works
    join_with_invite(stores.db, again.code, PIN, PIN)
    with pytest.raises(ConflictError, match="joined already: reset their PIN"):
        reinvite(stores.db, number, 14)
    # An invite that lapsed: a fresh one.
    late, _ = invite_worker(stores.db, "late", 14)
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update()
            .where(schema.workers.c.id == late)
            .values(invite_expires_at=utcnow() - timedelta(days=1))
        )
    fresh = reinvite(stores.db, late, 14)
    assert join_with_invite(stores.db, fresh.code, PIN, PIN).id == late


def test_inviting_a_name_again(stores: Stores) -> None:
    code, again = invite_or_reinvite(stores.db, "Aminah", 14, language="ms")
    assert not again and worker_row(stores, code.worker_id).language == "ms"
    second, again = invite_or_reinvite(stores.db, " Aminah ", 14)
    assert again and second.worker_id == code.worker_id and second.code != code.code
    join_with_invite(stores.db, second.code, PIN, PIN)
    with pytest.raises(ConflictError, match=f"reset-pin {code.worker_id}"):
        invite_or_reinvite(stores.db, "Aminah", 14)
    add_person(stores.db, "Boss", "operator")
    with pytest.raises(ConflictError, match="exists already"):
        invite_or_reinvite(stores.db, "Boss", 14)


def test_an_operator_sets_a_workers_language_on_record(stores: Stores) -> None:
    number = joined_worker(stores)
    assert set_worker_language(stores.db, number, "ms", None)
    assert not set_worker_language(stores.db, number, "ms", None)  # nothing to change
    assert worker_row(stores, number).language == "ms"
    with pytest.raises(BadInputError, match="language must be one of"):
        set_worker_language(stores.db, number, "fr")
    assert audit_details(stores) == [f"worker {number}: language ms (command line)"]


def test_a_worker_changes_their_pin_and_their_other_sessions_end(stores: Stores) -> None:
    number = joined_worker(stores)
    here, _ = start_session(stores.db, number, 8)
    # A second session (another device) is opened directly: start_session ends the others.
    there = "another-device-cookie"
    with stores.db.begin() as conn:
        conn.execute(
            schema.sessions.insert().values(
                id=hashlib.sha256(there.encode()).hexdigest(),
                worker_id=number,
                csrf_token="x",
                expires_at=utcnow() + timedelta(hours=1),
                last_seen_at=utcnow(),
            )
        )
    with pytest.raises(ForbiddenError, match="pin_current_wrong"):
        change_pin(stores.db, number, "000000", NEW_PIN, NEW_PIN, here)
    with pytest.raises(BadInputError, match="pin_easy"):
        change_pin(stores.db, number, PIN, "123456", "123456", here)
    with pytest.raises(BadInputError, match="pin_mismatch"):
        change_pin(stores.db, number, PIN, NEW_PIN, "739165", here)
    session_person(stores.db, there)  # nothing changed so far
    change_pin(stores.db, number, PIN, NEW_PIN, NEW_PIN, here)
    assert person_by_pin(stores.db, number, NEW_PIN).id == number
    with pytest.raises(ForbiddenError):
        person_by_pin(stores.db, number, PIN)
    assert session_person(stores.db, here)[0].id == number
    with pytest.raises(ForbiddenError):
        session_person(stores.db, there)


# ---- the pages --------------------------------------------------------------------------------


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


def signed_in_worker(client: TestClient, number: int, pin: str = PIN) -> str:
    """Sign the worker in with their PIN; the CSRF token of their pages."""
    r = client.post("/signin", data={"number": str(number), "pin": pin, "csrf": form_token(client)})
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/me").text)


@pytest.fixture
def app_of(settings: Settings, stores: Stores) -> Any:
    return lambda: TestClient(create_app(settings, stores), follow_redirects=False)


def test_the_pin_page_changes_the_pin_and_keeps_only_this_session(
    app_of: Any, stores: Stores
) -> None:
    number = joined_worker(stores)
    phone, pc = app_of(), app_of()
    csrf = signed_in_worker(phone, number)
    page = phone.get("/me/pin")
    assert page.status_code == 200 and 'name="current"' in page.text
    assert 'href="/me/pin"' in phone.get("/me").text
    # The telecentre PC signs in after the phone (which ends the phone's session): sign
    # the phone in again, then leave the PC's session in the table as a second device's.
    pc_csrf = signed_in_worker(pc, number)
    csrf = signed_in_worker(phone, number)
    with stores.db.begin() as conn:
        conn.execute(
            schema.sessions.insert().values(
                id=hashlib.sha256(pc.cookies[COOKIE].encode()).hexdigest(),
                worker_id=number,
                csrf_token=pc_csrf,
                expires_at=utcnow() + timedelta(hours=1),
                last_seen_at=utcnow(),
            )
        )
    assert pc.get("/me").status_code == 200
    form = {"csrf": csrf, "current": PIN, "pin": NEW_PIN, "pin_again": NEW_PIN}
    assert phone.post("/me/pin", data=form | {"csrf": "forged"}).status_code == 403
    wrong = phone.post("/me/pin", data=form | {"current": "111112"})
    assert wrong.status_code == 403 and catalog("en")["pin_current_wrong"] in wrong.text
    easy = phone.post("/me/pin", data=form | {"pin": "654321", "pin_again": "654321"})
    assert easy.status_code == 400 and catalog("en")["pin_easy"] in easy.text
    done = phone.post("/me/pin", data=form)
    assert done.status_code == 303 and done.headers["location"] == "/me/pin?done=1"
    assert catalog("en")["pin_changed"] in phone.get("/me/pin?done=1").text
    assert phone.get("/me").status_code == 200  # this session goes on
    assert pc.get("/me").headers["location"] == "/signin"  # the other one ended
    fresh = app_of()
    r = fresh.post("/signin", data={"number": str(number), "pin": PIN, "csrf": form_token(fresh)})
    assert r.status_code == 403
    signed_in_worker(fresh, number, NEW_PIN)


def test_guessing_the_current_pin_is_throttled_with_sign_in(
    app_of: Any, stores: Stores, settings: Settings
) -> None:
    number = joined_worker(stores)
    thief = app_of()
    csrf = signed_in_worker(thief, number)
    guess = {"csrf": csrf, "pin": NEW_PIN, "pin_again": NEW_PIN}
    for i in range(settings.review.signin_max_failures):
        r = thief.post("/me/pin", data=guess | {"current": f"{100000 + i}"})
        assert r.status_code == 403
    # Locked, even with the right PIN; and sign-in by PIN for that worker is locked too.
    r = thief.post("/me/pin", data=guess | {"current": PIN})
    assert r.status_code == 429 and "Too many tries" in r.text
    other = app_of()
    r = other.post("/signin", data={"number": str(number), "pin": PIN, "csrf": form_token(other)})
    assert r.status_code == 429
    assert person_by_pin(stores.db, number, PIN).id == number  # the PIN never changed


def test_a_staff_access_code_has_no_pin_page(app_of: Any, stores: Stores) -> None:
    boss = app_of()
    sign_in_with_code(boss, add_person(stores.db, "Boss", "operator"))
    assert boss.get("/me/pin").status_code == 403


def operator_client(app_of: Any, stores: Stores) -> tuple[TestClient, str, str]:
    code = add_person(stores.db, "ops", "operator")
    client = app_of()
    assert sign_in_with_code(client, code).status_code == 303
    return client, csrf_of(client.get("/operator/workers").text), code


def test_the_operator_resets_a_pin_from_the_workers_page(app_of: Any, stores: Stores) -> None:
    number = joined_worker(stores)
    never, _ = invite_worker(stores.db, "never", 14)
    worker = app_of()
    signed_in_worker(worker, number)
    ops, csrf, _ = operator_client(app_of, stores)
    listed = ops.get("/operator/workers").text
    assert f'id="reset-pin-{number}"' in listed and f'id="reinvite-{number}"' not in listed
    assert f'id="reinvite-{never}"' in listed and f'id="reset-pin-{never}"' not in listed
    assert ops.post(f"/operator/workers/{number}", data={"action": "reset-pin"}).status_code == 422
    forged = ops.post(f"/operator/workers/{number}", data={"csrf": "x", "action": "reset-pin"})
    assert forged.status_code == 403 and worker.get("/me").status_code == 200
    shown = ops.post(f"/operator/workers/{number}", data={"csrf": csrf, "action": "reset-pin"})
    # The code on a page of its own, not in a redirect's URL, kept by no cache.
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    code = CODE.search(shown.text).group(0)  # type: ignore[union-attr]
    assert "aminah" in shown.text and "Valid until" in shown.text
    assert worker.get("/me").headers["location"] == "/signin"
    assert code.replace("-", "") not in " ".join(audit_details(stores)).replace("-", "")
    audit = ops.get("/operator/audit?action=standing").text
    assert f"worker {number}: PIN reset" in audit
    # The worker joins with it, chooses a new PIN and is in.
    r = worker.post(
        "/join",
        data={"invite": code, "pin": NEW_PIN, "pin_again": NEW_PIN, "csrf": form_token(worker)},
    )
    assert r.status_code == 303 and worker.get("/me").status_code == 200
    # Re-inviting a worker who has joined is refused; the one who never joined gets a code.
    refused = ops.post(f"/operator/workers/{number}", data={"csrf": csrf, "action": "reinvite"})
    assert refused.status_code == 409 and "reset their PIN" in refused.text
    again = ops.post(f"/operator/workers/{never}", data={"csrf": csrf, "action": "reinvite"})
    assert again.status_code == 200 and CODE.search(again.text)
    assert "New invite code" in again.text


def test_the_operator_sets_a_language_and_staff_cannot_be_reset(
    app_of: Any, stores: Stores
) -> None:
    number = joined_worker(stores)
    ops, csrf, _ = operator_client(app_of, stores)
    r = ops.post(
        f"/operator/workers/{number}", data={"csrf": csrf, "action": "language", "language": "ms"}
    )
    assert r.status_code == 303 and "language+ms" in r.headers["location"]
    assert worker_row(stores, number).language == "ms"
    bad = ops.post(
        f"/operator/workers/{number}", data={"csrf": csrf, "action": "language", "language": "x"}
    )
    assert bad.status_code == 400
    boss = person_by_code(stores.db, add_person(stores.db, "Boss", "operator")).id
    r = ops.post(f"/operator/workers/{boss}", data={"csrf": csrf, "action": "reset-pin"})
    assert r.status_code == 400 and "not a worker" in r.text
    assert (
        ops.post("/operator/workers/999", data={"csrf": csrf, "action": "reset-pin"}).status_code
        == 404
    )


def test_the_api_twins(app_of: Any, stores: Stores) -> None:
    number = joined_worker(stores)
    ops, _, code = operator_client(app_of, stores)
    auth = {"Authorization": f"Bearer {code}"}
    r = ops.post(f"/api/workers/{number}/reset-pin", headers=auth)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert CODE.fullmatch(r.json()["invite_code"]) and r.json()["worker_id"] == number
    assert ops.post(f"/api/workers/{number}/reinvite", headers=auth).status_code == 200
    r = ops.post(f"/api/workers/{number}/language?language=ms", headers=auth)
    assert r.json() == {"worker_id": number, "changed": ["language ms"]}
    worker_code = add_person(stores.db, "api-worker", "worker", practised=True)
    r = ops.post(
        f"/api/workers/{number}/reset-pin", headers={"Authorization": f"Bearer {worker_code}"}
    )
    assert r.status_code == 403


# ---- the command line --------------------------------------------------------------------------


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_people_invite_again_reset_pin_and_language(env: Any) -> None:
    first = run("people", "invite", "Aminah")
    assert first.exit_code == 0, first.output
    number = int(re.search(r"number (\d+)", first.output).group(1))  # type: ignore[union-attr]
    again = run("people", "invite", "Aminah")
    assert again.exit_code == 0 and "invited again" in again.output
    code = CODE.search(again.output).group(0)  # type: ignore[union-attr]
    assert code not in first.output
    db = open_stores(Settings.load()).db
    join_with_invite(db, code, PIN, PIN)
    joined = run("people", "invite", "Aminah")
    assert joined.exit_code != 0
    assert f"kerani people reset-pin {number}" in " ".join(joined.output.split())
    reset = run("people", "reset-pin", str(number))
    assert reset.exit_code == 0 and CODE.search(reset.output), reset.output
    assert "(command line)" in " ".join(
        db.connect().execute(select(schema.audit_log.c.detail)).scalars()
    )
    assert run("people", "language", str(number), "ms").exit_code == 0
    with db.connect() as conn:
        lang = conn.execute(
            select(schema.workers.c.language).where(schema.workers.c.id == number)
        ).scalar_one()
    assert lang == "ms"
    for bad, said in (
        (("people", "reset-pin", "abc"), "worker number is digits"),
        (("people", "reset-pin", "999"), "no worker with number 999"),
        (("people", "language", str(number), "fr"), "language must be one of"),
    ):
        result = run(*bad)
        assert result.exit_code != 0 and said in result.output, result.output
        assert "Traceback" not in result.output
    run("people", "add", "Boss", "--role", "operator")
    staff = run("people", "invite", "Boss")
    assert staff.exit_code != 0 and "exists already" in staff.output
