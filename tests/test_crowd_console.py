"""The operator's view of the crowd: the queue by field type and age, leases, pace, ETA,
fields waiting for an arbiter, and each worker's standing, gold, speed and pay."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from kerani.core.errors import ForbiddenError, NotFoundError
from kerani.core.settings import CrowdSettings, Settings
from kerani.core.vocabulary import AuditAction
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.audit import audit_entries
from kerani.microtasks.crowd import crowd_health, worker_records
from kerani.microtasks.leases import claim_next
from kerani.microtasks.standing import revoke, set_standing
from kerani.people.workers import add_person, person_by_code, session_person, start_session
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page, sign_in_with_code

RULES = CrowdSettings(gold_every=0, blind_share=0.0, blind_follows_ocr=False)
GUESSES = [
    ("postcode", "postcode", "4O100", 99.0),
    ("city", "text", "SHAH ALAM", 40.0),
    ("state", "text", "SELANGOR", 40.0),
]


def worker(stores: Stores, name: str, **flags: bool) -> int:
    wid = person_by_code(stores.db, add_person(stores.db, name, "worker", practised=True)).id
    with stores.db.begin() as conn:
        conn.execute(
            update(schema.workers)
            .where(schema.workers.c.id == wid)
            .values(**({"proven": True} | flags))
        )
    return wid


def test_the_queue_by_type_and_age_the_leases_and_the_pace(stores: Stores) -> None:
    old_page = seed_page(stores, GUESSES)
    new_page = seed_page(stores, GUESSES)
    t, f = schema.tasks, schema.fields
    with stores.db.begin() as conn:  # the first batch's tasks have waited two days
        old_fields = (
            f.select().with_only_columns(f.c.id).where(f.c.page_id == old_page).scalar_subquery()
        )
        conn.execute(
            update(t)
            .where(t.c.field_id.in_(old_fields))
            .values(created_at=utcnow() - timedelta(days=2))
        )
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    held = claim_next(stores.db, ana, RULES)
    assert held is not None
    lapsed = claim_next(stores.db, ben, RULES)
    assert lapsed is not None
    with stores.db.begin() as conn:
        conn.execute(
            update(t)
            .where(t.c.id == lapsed.task_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=5))
        )
    submit_answer(stores.db, held.task_id, ana, "value", "40100", "k1", RULES, duration_ms=4000)
    health = crowd_health(stores.db, RULES)
    by_type = {o.field_type: o for o in health.open_tasks}
    # Four text fields (city and state of both pages), two postcodes; half of each waited
    # two days.
    assert {k: (o.total, o.under_an_hour, o.under_a_day, o.older) for k, o in by_type.items()} == {
        "text": (4, 2, 0, 2),
        "postcode": (2, 1, 0, 1),
    }
    assert by_type["text"].oldest_hours >= 47.9
    assert (health.leases_held, health.leases_expired) == (0, 1)  # Ana's ended with her answer
    assert health.active_workers == 1 and health.answers_last_hour == 1
    # Oldest batch first: the new batch's ETA counts the old batch's fields ahead of it.
    assert [(b.batch_id, b.open_fields) for b in health.batches] == [
        (batch_of(stores, old_page), 3),
        (batch_of(stores, new_page), 3),
    ]
    assert all(b.eta_hours is None for b in health.batches)  # nothing settled in the hour


def test_disputes_and_fields_at_the_limit_say_who_may_take_them(stores: Stores) -> None:
    seed_page(stores, GUESSES[1:2])
    voters = [worker(stores, name) for name in ("ana", "ben", "cat")]
    worker(stores, "judge", trusted=True)
    task_id = ""
    for i, wid in enumerate(voters):  # three who disagree: a dispute for an arbiter
        task = claim_next(stores.db, wid, RULES)
        assert task is not None
        task_id = task.task_id
        submit_answer(stores.db, task.task_id, wid, "value", f"CITY {i}", f"k{i}", RULES)
    waiting = crowd_health(stores.db, RULES).waiting
    assert [(w.task_id, w.why, w.answers, w.may_take) for w in waiting] == [
        (task_id, "dispute", 3, 1)
    ]


def test_each_worker_with_standing_gold_interval_speed_and_pay(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana = worker(stores, "ana")
    worker(stores, "spam", quarantined=True)
    worker(stores, "newcomer", proven=False)
    q = schema.worker_quality
    with stores.db.begin() as conn:
        conn.execute(
            q.insert().values(
                worker_id=ana,
                field_type="text",
                gold_seen=10,
                gold_correct=9,
                agree_seen=0,
                agree_correct=0,
                accuracy=0.9,
                updated_at=utcnow(),
            )
        )
    for i, ms in enumerate((3000, 5000, 100_000)):
        task = claim_next(stores.db, ana, RULES)
        if task is None:
            break
        submit_answer(stores.db, task.task_id, ana, "value", "X", f"s{i}", RULES, duration_ms=ms)
    records = {r.name: r for r in worker_records(stores.db)}
    assert {n: r.status for n, r in records.items()} == {
        "ana": "worker",
        "spam": "paused",
        "newcomer": "probation",
    }
    a = records["ana"]
    assert (a.gold_seen, a.gold_correct, a.accuracy) == (10, 9, 0.9)
    assert a.accuracy_low is not None and a.accuracy_high is not None
    assert a.accuracy_low < 0.9 < a.accuracy_high  # the interval, not a bare share
    assert a.seconds_per_answer == 5.0  # the median, not the mean a long pause would pull
    assert a.earned_sen == 3 * RULES.rate_sen_field and a.answers == 3
    assert records["newcomer"].accuracy is None
    assert [r.name for r in worker_records(stores.db, search="SPA")] == ["spam"]
    assert [r.name for r in worker_records(stores.db, status="probation")] == ["newcomer"]
    assert worker_records(stores.db, search="%") == []  # a wildcard is a character here


def audit_details(stores: Stores) -> list[tuple[int, str]]:
    log = schema.audit_log
    with stores.db.connect() as conn:
        return [
            (r.worker_id, r.detail)
            for r in conn.execute(
                select(log.c.worker_id, log.c.detail)
                .where(log.c.action == AuditAction.STANDING)
                .order_by(log.c.id)
            )
        ]


def test_pausing_gives_back_the_workers_leases_and_every_change_is_audited(
    stores: Stores,
) -> None:
    seed_page(stores, GUESSES)
    boss = person_by_code(stores.db, add_person(stores.db, "boss", "operator")).id
    ana = worker(stores, "ana")
    held = claim_next(stores.db, ana, RULES)
    assert held is not None
    change = set_standing(stores.db, boss, ana, RULES, paused=True)
    assert change.changed == ("paused",)
    ben = worker(stores, "ben")  # Ana's task is free at once, not when her lease ends
    freed = claim_next(stores.db, ben, RULES)
    assert freed is not None and freed.task_id == held.task_id
    with pytest.raises(ForbiddenError):
        claim_next(stores.db, ana, RULES)
    # Asking again for what is already so changes nothing and logs nothing.
    assert set_standing(stores.db, boss, ana, RULES, paused=True).changed == ()
    both = set_standing(stores.db, boss, ana, RULES, paused=False, trusted=True, cleared=True)
    assert both.changed == ("unpaused", "trusted", "cleared")
    assert claim_next(stores.db, ana, RULES) is not None
    assert audit_details(stores) == [
        (boss, f"worker {ana}: paused"),
        (boss, f"worker {ana}: unpaused"),
        (boss, f"worker {ana}: trusted"),
        (boss, f"worker {ana}: cleared"),
    ]
    with pytest.raises(NotFoundError):  # an operator is not a worker to pause
        set_standing(stores.db, boss, boss, RULES, paused=True)


def test_revoking_ends_the_workers_sessions_and_voids_their_code(stores: Stores) -> None:
    boss = person_by_code(stores.db, add_person(stores.db, "boss", "operator")).id
    code = add_person(stores.db, "ana", "worker", proven=True, practised=True)
    ana = person_by_code(stores.db, code).id
    cookie, _csrf = start_session(stores.db, ana, 8)
    assert session_person(stores.db, cookie, 0)[0].id == ana
    revoke(stores.db, boss, ana, RULES)
    with pytest.raises(ForbiddenError):
        session_person(stores.db, cookie, 0)
    with pytest.raises(ForbiddenError):
        person_by_code(stores.db, code)
    assert [r.status for r in worker_records(stores.db)] == ["paused"]
    assert audit_details(stores) == [(boss, f"worker {ana}: revoked")]


def test_the_status_page_masks_personal_answers_until_the_operator_asks_and_audits_the_look(
    settings: Settings, stores: Stores
) -> None:
    seed_page(stores, GUESSES)  # city and state are personal (the default), postcode too
    f = schema.fields
    with stores.db.begin() as conn:
        conn.execute(update(f).where(f.c.name == "postcode").values(sensitivity="public"))
    ana = worker(stores, "ana")
    typed = {"postcode": "40100", "city": "Q7SECRETCITY", "state": "Q7SECRETSTATE"}
    while (task := claim_next(stores.db, ana, RULES)) is not None:
        submit_answer(
            stores.db, task.task_id, ana, "value", typed[task.field_name], task.task_id, RULES
        )
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in_with_code(client, add_person(stores.db, "boss", "operator"))
    page = client.get("/status").text
    assert "40100" in page  # public: shown
    assert "Q7SECRET" not in page and "SHAH ALAM" not in page  # personal: neither answer nor OCR
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    reveal = re.findall(r'action="(/operator/answers/\d+/reveal)"', page)
    assert len(reveal) == 2
    shown = client.post(reveal[0], data={"csrf": csrf})
    assert shown.status_code == 200 and "Q7SECRET" in shown.text
    log = schema.audit_log
    with stores.db.connect() as conn:
        looks = conn.execute(select(log.c.detail).where(log.c.action == AuditAction.REVEAL)).all()
    assert len(looks) == 1
    assert client.post(reveal[1], data={"csrf": "forged"}).status_code == 403


def test_health_names_each_part_and_metrics_are_prometheus_text_for_operators(
    settings: Settings, stores: Stores
) -> None:
    seed_page(stores, GUESSES)
    worker(stores, "spam", quarantined=True)
    client = TestClient(create_app(settings, stores))
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "database": "ok",
        "blobs": "ok",
        "prefect": "not used",
    }
    auth = {"Authorization": f"Bearer {add_person(stores.db, 'boss', 'operator')}"}
    text = client.get("/metrics", headers=auth).text
    assert 'kerani_open_tasks{field_type="text"} 2.0' in text
    assert 'kerani_workers{status="paused"} 1.0' in text
    assert "# TYPE kerani_active_workers gauge" in text
    worker_auth = {
        "Authorization": f"Bearer {add_person(stores.db, 'ana', 'worker', practised=True)}"
    }
    assert client.get("/metrics", headers=worker_auth).status_code == 403


def test_health_says_down_with_503_when_the_blob_store_does_not_answer(
    settings: Settings, stores: Stores
) -> None:
    # A disk that fails cannot be had here (the tests run as root): a store that raises
    # stands in for it.
    class Broken:
        def exists(self, key: str) -> bool:
            raise OSError("disk gone")

    broken = Stores(stores.db, Broken())  # type: ignore[arg-type]
    health = TestClient(create_app(settings, broken)).get("/health")
    assert health.status_code == 503
    assert health.json()["blobs"] == "down" and health.json()["database"] == "ok"


def test_the_audit_log_is_searched_by_person_and_action_a_page_at_a_time(
    settings: Settings, stores: Stores
) -> None:
    seed_page(stores, GUESSES)
    ana = worker(stores, "ana")
    while (task := claim_next(stores.db, ana, RULES)) is not None:
        submit_answer(stores.db, task.task_id, ana, "value", "Q7TYPED", task.task_id, RULES)
    boss = person_by_code(stores.db, add_person(stores.db, "boss", "operator")).id
    set_standing(stores.db, boss, ana, RULES, trusted=True)
    assert [r["action"] for r in audit_entries(stores.db, who="boss")] == ["standing"]
    answers = audit_entries(stores.db, who="AN", action="answer")
    assert len(answers) == 3 and {r["who"] for r in answers} == {"ana"}
    older = audit_entries(stores.db, "ana", "answer", before=answers[0]["id"], limit=2)
    assert [r["id"] for r in older] == [answers[1]["id"], answers[2]["id"]]
    client = TestClient(create_app(settings, stores))
    sign_in_with_code(client, add_person(stores.db, "olivia", "operator"))
    page = client.get("/operator/audit", params={"who": "ana", "action": "answer"}).text
    assert page.count("<td>answer</td>") == 3 and "Q7TYPED" not in page  # ids, never values
    assert client.get("/operator/audit", params={"action": "drop"}).status_code == 400
