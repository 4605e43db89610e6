"""The practice round before paid work: its items, its pass rule, the gate in claim_tasks
(SQLite and PostgreSQL), and its pages (introduction, answers with feedback, retry)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from kerani.cli import app
from kerani.core.errors import BadInputError, ForbiddenError
from kerani.core.settings import CrowdSettings, Settings
from kerani.microtasks.leases import claim_tasks
from kerani.microtasks.practice import (
    answer_practice,
    check_answer,
    needed_right,
    practice_item,
    practice_items,
    practice_state,
    round_passed,
)
from kerani.people.workers import add_person, invite_worker, person_by_code
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores, open_stores
from tests.factories import form_token, seed_page, sign_in_with_code

RULES = CrowdSettings(gold_every=0)
LINES = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 40.0) for i in range(4)]
PIN = "402917"


def right_answer(item_id: str) -> tuple[str, str]:
    """The (action, value) that answers a practice item right."""
    item = practice_item(item_id)
    return item.kind, item.value


def test_the_pass_rule_needs_every_item_and_the_share_right() -> None:
    assert needed_right(10, 0.8) == 8 and needed_right(9, 0.8) == 8 and needed_right(5, 1.0) == 5
    assert round_passed([True] * 8 + [False] * 2, 10, 0.8)
    assert not round_passed([True] * 7 + [False] * 3, 10, 0.8)
    assert not round_passed([True] * 9, 10, 0.8)  # not finished: one item unanswered
    assert round_passed([True], 1, 1.0) and not round_passed([], 0, 0.8)


def test_the_items_mix_every_kind_and_answers_are_compared_as_real_ones() -> None:
    items = practice_items()
    assert len(items) == 10 == len({i.id for i in items})
    kinds = [i.field_type for i in items]
    assert {"amount", "date", "ic_number", "line"} <= set(kinds)
    assert [i.kind for i in items].count("unreadable") == 1
    assert [i.kind for i in items].count("blank") == 1
    assert all(i.snippet[:4] == b"RIFF" for i in items)  # cut by crop_snippet (WebP)
    total = practice_item("amount-total-020")
    # The type's normalisation, as consensus compares answers: RM and padding do not matter.
    assert check_answer(total, "value", "RM 54.50") and check_answer(total, "value", "54.5")
    assert not check_answer(total, "value", "5450") and not check_answer(total, "blank", "")
    date = practice_item("date-076")
    assert check_answer(date, "value", "27.03.2018") and not check_answer(date, "value", "2018")
    ic = practice_item("ic-form")
    assert check_answer(ic, "value", "850412105528")
    line = practice_item("line-020-company")
    assert check_answer(line, "value", " SYL  ROASTED DELIGHTS SDN. BHD. ")
    assert not check_answer(line, "value", "syl roasted delights sdn. bhd.")  # case is kept
    assert check_answer(practice_item("unreadable-line"), "unreadable", "")
    assert check_answer(practice_item("blank-form"), "blank", "")
    assert not check_answer(practice_item("blank-form"), "value", "012-3456789")


def test_claim_tasks_leases_nothing_to_a_worker_who_has_not_passed_practice(
    stores: Stores,
) -> None:
    seed_page(stores, LINES, template="receipt")
    new = person_by_code(stores.db, add_person(stores.db, "new", "worker", proven=True)).id
    for count, kind in ((1, None), (3, None), (5, "line")):
        with pytest.raises(ForbiddenError, match="practice") as refused:
            claim_tasks(stores.db, new, RULES, count, field_kind=kind)
        assert refused.value.key == "practice_first"
    t = schema.tasks
    with stores.db.connect() as conn:
        leased = conn.execute(
            select(func.count()).select_from(t).where(t.c.lease_worker_id.is_not(None))
        ).scalar_one()
    assert leased == 0
    # Through the round, right but for one: passed, and paid work comes.
    state = practice_state(stores.db, new, RULES)
    for i, item in enumerate(state.items):
        action, value = right_answer(item.id) if i else ("value", "wrong")
        state = answer_practice(stores.db, new, 1, item.id, action, value, RULES)
    assert state.complete and state.right == 9 and state.passed_at is not None
    assert len(claim_tasks(stores.db, new, RULES, 3)) == 3


def test_a_failed_round_is_tried_again_and_practice_is_kept_apart(stores: Stores) -> None:
    seed_page(stores, LINES, template="receipt")
    wid = person_by_code(stores.db, add_person(stores.db, "ana", "worker")).id
    items = practice_state(stores.db, wid, RULES).items
    for item in items:
        state = answer_practice(stores.db, wid, 1, item.id, "value", "54.50", RULES)
    assert state.complete and not state.round_passed and state.passed_at is None
    with pytest.raises(ForbiddenError):
        claim_tasks(stores.db, wid, RULES)
    # A resubmit of an item changes nothing; a round further on is refused.
    again = answer_practice(stores.db, wid, 1, items[0].id, *right_answer(items[0].id), RULES)
    assert again.right == state.right
    with pytest.raises(BadInputError):
        answer_practice(stores.db, wid, 3, items[0].id, "value", "x", RULES)
    for item in items:
        state = answer_practice(stores.db, wid, 2, item.id, *right_answer(item.id), RULES)
    assert state.round == 2 and state.round_passed and state.passed_at is not None
    with stores.db.connect() as conn:
        kept = conn.execute(select(func.count()).select_from(schema.practice_answers)).scalar()
        answers = conn.execute(select(func.count()).select_from(schema.answers)).scalar()
        paid = conn.execute(select(func.count()).select_from(schema.ledger)).scalar()
    assert (kept, answers, paid) == (20, 0, 0)  # neither answers to tasks nor paid


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_joining_leads_to_the_introduction_and_practice_opens_paid_work(
    settings: Settings, stores: Stores
) -> None:
    seed_page(stores, LINES, template="receipt")
    settings.crowd.gold_every = 0
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    number, invite = invite_worker(stores.db, "siti", 14)
    joined = client.post(
        "/join", data={"invite": invite, "pin": PIN, "pin_again": PIN, "csrf": form_token(client)}
    )
    assert joined.headers["location"] == "/welcome/1"
    first = client.get("/welcome/1")
    assert f"Your worker number is {number}" in first.text
    assert "/static/welcome-snippet.svg" in first.text
    assert client.get("/welcome/5").status_code == 404
    # Paid work waits: /review and /column lead to the introduction, then to practice.
    assert client.get("/review").headers["location"] == "/welcome/1"
    assert client.get("/column").headers["location"] == "/welcome/1"
    assert "Before paid work" in client.get("/me").text
    csrf = csrf_of(client.get("/practice").text)
    for i, item in enumerate(practice_items()):
        action, value = right_answer(item.id) if i else ("value", "RM 5450")
        posted = client.post(
            "/practice",
            data={"csrf": csrf, "round": "1", "item": item.id, "action": action, "value": value},
        )
        feedback = client.get(posted.headers["location"]).text
        if i == 0:
            assert "The snippet says “54.50”, you typed “RM 5450”." in feedback
            assert "No need to type RM" in feedback  # the tip of its kind
            assert client.get("/review").headers["location"] == "/practice"
        else:
            assert "Right!" in feedback
    result = client.get("/practice").text
    assert "You passed the practice round" in result and "9 of 10 right" in result
    review = client.get("/review")
    assert review.status_code == 200 and 'id="field-help"' in review.text
    assert "capitals as printed" in review.text  # the tip of a text line, one tap away
    assert "Before paid work" not in client.get("/me").text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_operator_made_worker_must_practise_and_the_page_says_so_in_malay(
    settings: Settings, stores: Stores
) -> None:
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in_with_code(client, add_person(stores.db, "ana", "worker", proven=True, trusted=True))
    me = client.get("/me").text
    client.post("/language", data={"lang": "ms", "next": "/me", "csrf": csrf_of(me)})
    assert client.get("/review").headers["location"] == "/welcome/1"
    page = client.get("/welcome/3").text
    assert "Tidak boleh dibaca" in page and "Langkah 3 daripada 4" in page
    practice = client.get("/practice").text
    assert "Latihan 1 daripada 10" in practice and "Bantuan" in practice


def test_workers_an_operator_adds_or_invites_start_without_practice(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["people", "add", "Siti", "--proven"]).exit_code == 0
    assert runner.invoke(app, ["people", "invite", "Aminah"]).exit_code == 0
    db = open_stores(Settings.load()).db
    w = schema.workers
    with db.connect() as conn:
        passed = {r.name: r.practice_passed_at for r in conn.execute(select(w))}
    assert passed == {"Siti": None, "Aminah": None}
