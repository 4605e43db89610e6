"""The crowd engine on SQLite and PostgreSQL: leases, privacy, escalation, gold, pay."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from kerani.core.errors import BadInputError, ForbiddenError
from kerani.core.settings import CrowdSettings
from kerani.flows.documents import finish_document
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.gold import make_gold
from kerani.microtasks.leases import claim_next, claim_tasks, leased_task, renew_leases
from kerani.microtasks.ledger import batch_cost, worker_earnings
from kerani.microtasks.tasks import queue_depth
from kerani.people.workers import add_person, person_by_code
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page

GUESSES = [
    ("full_name", "text", "SITI AMINAH", 99.0),  # auto-accepted
    ("postcode", "postcode", "4O100", 99.0),  # fails its validator: to people
    ("city", "text", "SHAH ALAM", 40.0),  # low confidence: to people
]
RULES = CrowdSettings(gold_every=0, blind_share=1.0, target_posterior=0.98)


def worker(stores: Stores, name: str, **flags: bool) -> int:
    """A worker past probation unless `proven=False` is given."""
    flags = {"proven": True} | flags
    wid = person_by_code(stores.db, add_person(stores.db, name, "worker", practised=True)).id
    if flags:
        with stores.db.begin() as conn:
            conn.execute(update(schema.workers).where(schema.workers.c.id == wid).values(**flags))
    return wid


def fields_by_name(stores: Stores) -> dict[str, object]:
    with stores.db.connect() as conn:
        return {r.name: r for r in conn.execute(select(schema.fields)).all()}


def test_routing_accepts_only_valid_confident_fields(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    status = {n: r.status for n, r in fields_by_name(stores).items()}  # type: ignore[attr-defined]
    assert status == {"full_name": "auto_accepted", "postcode": "in_review", "city": "in_review"}
    assert queue_depth(stores.db) == 2


def test_a_claim_is_a_lease_that_expires(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    t1 = claim_next(stores.db, ana, RULES)
    assert t1 is not None
    # Asking again (a reload) gives the same lease, not a second task.
    assert claim_next(stores.db, ana, RULES) == t1
    t2 = claim_next(stores.db, ben, RULES)
    assert t2 is not None and t2.task_id != t1.task_id
    # Nothing left for a third worker while both leases run ...
    cat = worker(stores, "cat")
    assert claim_next(stores.db, cat, RULES) is None
    # ... but once Ana's lease has expired, her task goes back to the queue.
    later = utcnow() + timedelta(seconds=RULES.lease_seconds + 1)
    t3 = claim_next(stores.db, cat, RULES, now=later)
    assert t3 is not None and t3.task_id == t1.task_id


def test_a_lapsed_lease_counts_for_its_holder_until_someone_else_takes_the_task(
    stores: Stores,
) -> None:
    seed_page(stores, GUESSES)
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    first, second = claim_tasks(stores.db, ana, RULES, count=2)
    t = schema.tasks
    with stores.db.begin() as conn:  # both of Ana's leases run out (her phone was offline)
        conn.execute(
            update(t)
            .where(t.c.id.in_([first.task_id, second.task_id]))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(ForbiddenError) as snippet:
        leased_task(stores.db, first.task_id, ana)  # no snippet is served any more ...
    assert snippet.value.key == "lease_expired"
    # ... but the answer she typed offline for a task nobody took since is recorded and paid.
    late = submit_answer(stores.db, first.task_id, ana, "value", "40100", "late-1", RULES)
    assert late.recorded
    assert worker_earnings(stores.db, ana).total_sen == RULES.rate_sen_field
    # The other task is the queue's again: Ben takes it, and Ana's answer is then refused.
    taken = claim_tasks(stores.db, ben, RULES, count=2)
    assert second.task_id in {task.task_id for task in taken}
    with pytest.raises(ForbiddenError) as foreign:
        submit_answer(stores.db, second.task_id, ana, "value", "SHAH ALAM", "late-2", RULES)
    assert foreign.value.key == "not_your_task"
    with stores.db.connect() as conn:
        answered = conn.execute(select(schema.answers.c.task_id)).scalars().all()
    assert answered == [first.task_id]


def test_answers_are_recorded_once_paid_once_and_settle_the_field(stores: Stores) -> None:
    page_id = seed_page(stores, GUESSES)
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    task = claim_next(stores.db, ana, RULES)
    assert task is not None and task.field_name == "postcode"
    first = submit_answer(stores.db, task.task_id, ana, "value", "40100", "key-1", RULES)
    assert first.recorded and not first.settled  # disagrees with the OCR's 4O100
    again = submit_answer(stores.db, task.task_id, ana, "value", "40100", "key-1", RULES)
    assert not again.recorded  # a retried submit changes nothing ...
    assert worker_earnings(stores.db, ana).total_sen == RULES.rate_sen_field  # ... paid once
    # Ana cannot take the same task again; Ben gets it and agrees with her.
    assert claim_next(stores.db, ana, RULES).field_name == "city"  # type: ignore[union-attr]
    again_task = claim_next(stores.db, ben, RULES)
    assert again_task is not None and again_task.task_id == task.task_id
    done = submit_answer(stores.db, task.task_id, ben, "value", "40100", "key-2", RULES)
    assert done.settled and done.completed_page_id is None  # city is still open
    city = leased_task(stores.db, claim_next(stores.db, ana, RULES).task_id, ana)  # type: ignore[union-attr]
    last = submit_answer(stores.db, city.task_id, ana, "value", "SHAH ALAM", "key-3", RULES)
    assert last.settled and last.completed_page_id == page_id
    assert finish_document(stores.db, page_id).status == "assembled"
    fields = fields_by_name(stores)
    assert fields["postcode"].value == "40100" and fields["postcode"].source == "human"  # type: ignore[attr-defined]
    assert fields["full_name"].source == "ocr"  # type: ignore[attr-defined]
    assert batch_cost(stores.db, batch_of(stores, page_id)).answers == 3
    with stores.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.answers)).scalar_one() == 3
        # Agreement was counted as evidence of both workers' quality, and of the OCR's.
        assert (
            conn.execute(select(func.sum(schema.worker_quality.c.agree_correct))).scalar_one() == 3
        )
        ocr = conn.execute(select(schema.ocr_quality)).all()
    # The OCR's record is kept per group: template, field type, evidence.
    assert {(r.field_type, r.seen, r.correct) for r in ocr} == {
        ("bantuan_form|postcode|page", 1, 0),
        ("bantuan_form|text|page", 1, 1),
    }


def test_another_workers_task_is_refused(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana, eve = worker(stores, "ana"), worker(stores, "eve")
    task = claim_next(stores.db, ana, RULES)
    assert task is not None
    with pytest.raises(ForbiddenError):
        leased_task(stores.db, task.task_id, eve)
    with pytest.raises(ForbiddenError):
        submit_answer(stores.db, task.task_id, eve, "value", "x", "eve-1", RULES)
    with pytest.raises(ForbiddenError):
        leased_task(stores.db, "no-such-task", eve)


def test_bad_answers_are_refused_clearly(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana = worker(stores, "ana")
    task = claim_next(stores.db, ana, RULES)
    assert task is not None
    with pytest.raises(BadInputError, match="answer kind"):
        submit_answer(stores.db, task.task_id, ana, "maybe", "x", "k", RULES)
    with pytest.raises(BadInputError, match="longer than"):
        submit_answer(stores.db, task.task_id, ana, "value", "x" * 5000, "k", RULES)


def test_skip_gives_the_task_to_someone_else_unpaid(stores: Stores) -> None:
    seed_page(stores, GUESSES[:2])
    ana, ben = worker(stores, "ana"), worker(stores, "ben")
    task = claim_next(stores.db, ana, RULES)
    assert task is not None
    outcome = submit_answer(stores.db, task.task_id, ana, "skip", "", "s-1", RULES)
    assert outcome.recorded and not outcome.settled
    assert claim_next(stores.db, ana, RULES) is None  # not offered to Ana again
    assert claim_next(stores.db, ben, RULES).task_id == task.task_id  # type: ignore[union-attr]
    assert worker_earnings(stores.db, ana).total_sen == 0


def test_no_worker_sees_more_than_the_limit_of_one_document(stores: Stores) -> None:
    guesses = [(f"f{i}", "text", "", 0.0) for i in range(5)]
    seed_page(stores, guesses)
    seed_page(stores, guesses)
    rules = CrowdSettings(gold_every=0, blind_share=1.0, max_fields_per_document=2)
    ana = worker(stores, "ana")
    pages = []
    while (task := claim_next(stores.db, ana, rules)) is not None:
        pages.append(task.page_id)
        submit_answer(stores.db, task.task_id, ana, "value", "x", f"k{len(pages)}", rules)
    assert sorted(pages.count(p) for p in set(pages)) == [2, 2]
    assert queue_depth(stores.db) == 10  # the rest waits for other people


def test_restricted_fields_go_only_to_cleared_workers(stores: Stores) -> None:
    seed_page(stores, [("ic_number", "ic_number", "", 0.0)])
    with stores.db.begin() as conn:
        conn.execute(update(schema.fields).values(sensitivity="restricted"))
    assert claim_next(stores.db, worker(stores, "ana"), RULES) is None
    assert claim_next(stores.db, worker(stores, "clara", cleared=True), RULES) is not None


def test_disputes_escalate_to_a_trusted_worker_who_arbitrates(stores: Stores) -> None:
    seed_page(stores, [("city", "text", "IPOH", 40.0)])
    rules = CrowdSettings(gold_every=0, blind_share=1.0, escalate_after=3, max_answers=6)
    for i, answer in enumerate(["KLANG", "KAJANG", "KLUANG"]):
        wid = worker(stores, f"w{i}")
        task = claim_next(stores.db, wid, rules)
        assert task is not None
        assert not submit_answer(
            stores.db, task.task_id, wid, "value", answer, f"k{i}", rules
        ).settled
    # Escalated: an ordinary worker is no longer offered it, a trusted one is.
    judge = worker(stores, "judge", trusted=True)
    assert claim_next(stores.db, worker(stores, "plain"), rules) is None
    task = claim_next(stores.db, judge, rules)
    assert task is not None
    outcome = submit_answer(stores.db, task.task_id, judge, "value", "KLANG", "kj", rules)
    assert outcome.settled
    field = fields_by_name(stores)["city"]
    assert field.value == "KLANG" and field.source == "arbitrated"  # type: ignore[attr-defined]
    assert worker_earnings(stores.db, judge).total_sen == rules.rate_sen_arbitration


def test_when_arbiters_disagree_anyone_gives_the_last_vote(stores: Stores) -> None:
    seed_page(stores, [("city", "text", "IPOH", 40.0)])
    rules = CrowdSettings(gold_every=0, blind_share=1.0, escalate_after=2, max_answers=5)
    answers = [
        ("w0", "KLANG", {}),
        ("w1", "KAJANG", {}),
        ("j0", "KLUANG", {"trusted": True}),
        ("j1", "KUANTAN", {"trusted": True}),
    ]
    for name, answer, flags in answers:
        wid = worker(stores, name, **flags)
        task = claim_next(stores.db, wid, rules)
        assert task is not None, name
        assert not submit_answer(stores.db, task.task_id, wid, "value", answer, name, rules).settled
    # No arbiter is left and four answers disagree: the fifth may come from anyone, and the
    # cap settles the field on the likeliest answer.
    last = worker(stores, "plain")
    task = claim_next(stores.db, last, rules)
    assert task is not None
    assert submit_answer(stores.db, task.task_id, last, "value", "KLANG", "p", rules).settled
    assert fields_by_name(stores)["city"].value == "KLANG"  # type: ignore[attr-defined]


def test_a_dispute_no_arbiter_may_take_goes_to_anyone(stores: Stores) -> None:
    # The one arbiter has seen as much of this document as anyone may: the dispute would
    # otherwise wait for ever (seen in the crowd simulation).
    fields = [("city", "text", "IPOH", 40.0), ("town", "text", "TAPAK", 40.0)]
    seed_page(stores, fields)
    rules = CrowdSettings(
        gold_every=0, blind_share=1.0, escalate_after=2, max_answers=5, max_fields_per_document=1
    )
    judge = worker(stores, "judge", trusted=True)
    city = claim_next(stores.db, judge, rules)
    assert city is not None and city.field_name == "city"  # its one field of the page
    submit_answer(stores.db, city.task_id, judge, "value", "IPOH", "j", rules)
    for i, answer in enumerate(["TAPAH", "TAIPING"]):
        wid = worker(stores, f"w{i}")
        task = claim_next(stores.db, wid, rules)
        assert task is not None and task.field_name == "town"
        assert not submit_answer(
            stores.db, task.task_id, wid, "value", answer, f"k{i}", rules
        ).settled
    assert claim_next(stores.db, judge, rules) is None  # the arbiter is at the document's cap
    # Another arbiter could still take it: it stays theirs.
    judge2 = worker(stores, "judge2", trusted=True)
    assert claim_next(stores.db, worker(stores, "plain"), rules) is None
    task = claim_next(stores.db, judge2, rules)
    assert task is not None and task.field_name == "town"
    submit_answer(stores.db, task.task_id, judge2, "skip", "", "j2-skip", rules)
    # Now no arbiter may take it (judge2 has seen their share): it goes to anyone.
    plain = worker(stores, "plain2")
    task = claim_next(stores.db, plain, rules)
    assert task is not None and task.field_name == "town"
    assert submit_answer(stores.db, task.task_id, plain, "value", "TAPAH", "p", rules).recorded


def _gold_fields(stores: Stores, count: int, ocr: str = "WRONG") -> list[int]:
    """A page of `count` fields made gold with the answers RIGHT0, RIGHT1, …"""
    gold_page = seed_page(stores, [(f"g{i}", "text", ocr, 10.0) for i in range(count)])
    with stores.db.connect() as conn:
        gold_ids = list(
            conn.execute(
                select(schema.fields.c.id).where(schema.fields.c.page_id == gold_page)
            ).scalars()
        )
    make_gold(stores.db, {fid: f"RIGHT{i}" for i, fid in enumerate(gold_ids)})
    return gold_ids


def _is_gold(stores: Stores, task_id: str) -> bool:
    with stores.db.connect() as conn:
        kind = conn.execute(select(schema.tasks.c.kind).where(schema.tasks.c.id == task_id))
        return kind.scalar_one() == "gold"


def test_gold_measures_workers_and_quarantine_undoes_their_influence(stores: Stores) -> None:
    rules = CrowdSettings(
        gold_every=2,
        blind_share=1.0,
        blind_share_gold=1.0,
        quarantine_min_gold=2,
        quarantine_below=0.7,
        target_posterior=0.9,
    )
    _gold_fields(stores, 4)
    assert queue_depth(stores.db) == 0  # gold is not agency work
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(12)])
    # A colluder who types what the OCR reads whatever the snippet shows (blind, as every
    # lease here): each field looks settled with the OCR at first.
    colluder = worker(stores, "colluder")
    draws = random.Random(7)
    gold_seen = answered = 0
    for n in range(16):
        try:
            task = claim_next(stores.db, colluder, rules, draws=draws)
        except ForbiddenError:
            break
        assert task is not None and task.blind and task.ocr_text == ""
        out = submit_answer(stores.db, task.task_id, colluder, "value", "OCR", f"s{n}", rules)
        answered += 1
        if out.gold_correct is not None:
            gold_seen += 1
            assert out.gold_correct is False
        else:
            assert out.settled
    assert gold_seen == 2 and answered > gold_seen
    # Quarantined after two failed gold: no more tasks, and the fields they settled
    # together with the OCR are open again.
    with pytest.raises(ForbiddenError, match="paused"):
        claim_next(stores.db, colluder, rules)
    statuses = [r.status for n, r in fields_by_name(stores).items() if n.startswith("f")]  # type: ignore[attr-defined]
    assert statuses == ["in_review"] * 12
    assert queue_depth(stores.db) == 12
    # Their pay waited for a check, and the checks found them out: none of it is paid.
    assert worker_earnings(stores.db, colluder).answers == 0
    with stores.db.connect() as conn:
        voided = conn.execute(
            select(func.count()).where(schema.ledger.c.status == "voided")
        ).scalar_one()
    assert voided == answered


def test_a_new_worker_who_accepts_every_prefill_settles_nothing(stores: Stores) -> None:
    rules = CrowdSettings(
        gold_every=3, blind_share=0.0, blind_follows_ocr=False, target_posterior=0.98
    )
    _gold_fields(stores, 6)
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(8)])
    spammer = worker(stores, "spammer", proven=False)  # on probation, as every new worker
    proven = worker(stores, "proven")  # past probation, but also only confirms
    draws = random.Random(3)
    for who in (spammer, proven):
        for n in range(8):
            try:
                task = claim_next(stores.db, who, rules, draws=draws)
            except ForbiddenError:
                break  # paused by gold
            if task is None:
                break
            kind, value = ("value", task.ocr_text) if task.ocr_text else ("blank", "")
            out = submit_answer(stores.db, task.task_id, who, kind, value, f"{who}-{n}", rules)
            # Neither settles a field: the spammer's answers are no votes yet, and a proven
            # worker's confirmation of a pre-filled guess is no independent vote.
            assert not out.settled
    work = [r for n, r in fields_by_name(stores).items() if n.startswith("f")]
    assert [r.status for r in work] == ["in_review"] * 8  # type: ignore[attr-defined]


def test_gold_comes_at_random_more_often_on_probation_and_less_for_arbiters(
    stores: Stores,
) -> None:
    rules = CrowdSettings(
        gold_every=6,
        gold_every_probation=2,
        gold_every_trusted=30,
        probation_min_gold=1000,  # stays on probation for the whole test
        max_fields_per_document=1000,
        target_posterior=0.9999,
        blind_share=1.0,
    )
    _gold_fields(stores, 120)
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(160)], template="receipt")
    draws = random.Random(11)
    positions: dict[str, list[int]] = {}
    standings = {
        "new": {"proven": False},
        "steady": {},
        "other": {},
        "arbiter": {"trusted": True},
    }
    for name, flags in standings.items():
        wid = worker(stores, name, **flags)
        positions[name] = []
        for n in range(80):
            task = claim_next(stores.db, wid, rules, draws=draws)
            assert task is not None
            gold = _is_gold(stores, task.task_id)
            value = f"RIGHT{task.field_name[1:]}" if gold else f"V{n}"
            out = submit_answer(stores.db, task.task_id, wid, "value", value, f"{name}{n}", rules)
            assert (out.gold_correct is not None) == gold
            if gold:
                positions[name].append(n)
    counts = {name: len(p) for name, p in positions.items()}
    # About 40, 13, 13 and 3 of 80: on probation most, arbiters least.
    assert counts["new"] > counts["steady"] > counts["arbiter"]
    assert counts["new"] > counts["other"] > counts["arbiter"]
    # Not at fixed places: two workers of one standing get gold at different tasks, and
    # the gaps between a worker's gold are not all the same.
    assert positions["steady"] != positions["other"]
    gaps = {b - a for a, b in zip(positions["steady"], positions["steady"][1:], strict=False)}
    assert len(gaps) > 2


def test_renewing_a_reserve_keeps_its_order_and_gives_a_full_lease(stores: Stores) -> None:
    seed_page(stores, [(f"f{i}", "text", "X", 40.0) for i in range(3)])
    rules = CrowdSettings(gold_every=0, blind_share=1.0, lease_seconds=60)
    ana = worker(stores, "ana")
    start = utcnow()
    first = claim_tasks(stores.db, ana, rules, count=3, now=start)
    later = start + timedelta(seconds=50)  # ten seconds of lease left
    assert renew_leases(stores.db, ana, rules, now=later) == 3
    t = schema.tasks
    with stores.db.connect() as conn:
        leases = conn.execute(
            select(t.c.id, t.c.lease_expires_at)
            .where(t.c.lease_worker_id == ana)
            .order_by(t.c.lease_expires_at)
        ).all()
    assert [r.id for r in leases] == [task.task_id for task in first]  # the order stays
    earliest = as_utc(leases[0].lease_expires_at)
    assert abs((earliest - (later + timedelta(seconds=60))).total_seconds()) < 0.01
    # Past the old expiry the reserve is still the worker's: nothing is claimed anew.
    again = claim_tasks(stores.db, ana, rules, count=3, now=later + timedelta(seconds=30))
    assert [task.task_id for task in again] == [task.task_id for task in first]
    log = schema.audit_log
    with stores.db.connect() as conn:
        claims = conn.execute(
            select(func.count()).select_from(log).where(log.c.action == "claim")
        ).scalar_one()
    assert claims == 3


def test_an_answer_keeps_what_was_prefilled_and_the_time_taken(stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana = worker(stores, "ana")
    shown = claim_next(stores.db, ana, RULES)
    blind = claim_next(stores.db, worker(stores, "ben"), RULES)
    assert shown is not None and blind is not None
    submit_answer(
        stores.db, shown.task_id, ana, "value", "40100", "k1", RULES,
        prefilled=shown.ocr_text, duration_ms=4200,
    )  # fmt: skip
    with pytest.raises(BadInputError, match="duration_ms"):
        submit_answer(stores.db, blind.task_id, 0, "value", "x", "k2", RULES, duration_ms=-1)
    a = schema.answers
    with stores.db.connect() as conn:
        row = conn.execute(select(a.c.prefilled, a.c.duration_ms).where(a.c.worker_id == ana)).one()
    assert (row.prefilled, row.duration_ms) == (shown.ocr_text, 4200)


def test_gold_from_real_work_is_never_shown_to_those_who_answered_it(stores: Stores) -> None:
    rules = CrowdSettings(gold_every=1, blind_share=1.0, target_posterior=0.9)
    page = seed_page(stores, [("city", "text", "KLANG", 40.0)])
    ana, ben, cy = (worker(stores, n) for n in ("ana", "ben", "cy"))
    field_id = fields_by_name(stores)["city"].id  # type: ignore[attr-defined]
    task = claim_next(stores.db, ana, rules.model_copy(update={"gold_every": 0}))
    assert task is not None and task.field_id == field_id
    submit_answer(stores.db, task.task_id, ana, "value", "KLANG", "a", rules)
    with stores.db.begin() as conn:  # as harvesting would make it: gold from the crowd
        conn.execute(
            update(schema.fields)
            .where(schema.fields.c.id == field_id)
            .values(gold_value="KLANG", gold_origin="crowd")
        )
    # Gold is due at every task: Ana, who answered the field, is never shown it as gold...
    assert claim_next(stores.db, ana, rules) is None
    # ...nor is Ben once he has seen his share of its document; Cy is.
    with stores.db.begin() as conn:
        conn.execute(
            schema.worker_page_views.insert().values(
                worker_id=ben, page_id=page, fields_seen=rules.max_fields_per_document
            )
        )
    assert claim_next(stores.db, ben, rules) is None
    gold = claim_next(stores.db, cy, rules)
    assert gold is not None and gold.field_id == field_id and _is_gold(stores, gold.task_id)


def test_blind_first_looks_follow_how_often_the_ocr_proves_right(stores: Stores) -> None:
    rules = CrowdSettings(gold_every=0, blind_share=0.1, max_fields_per_document=1000)
    seed_page(stores, [(f"t{i}", "text", "OCR", 40.0) for i in range(60)])
    seed_page(stores, [(f"d{i}", "date", "01/02/2000", 40.0) for i in range(60)])
    with stores.db.begin() as conn:  # settled history: text guesses right, dates wrong
        conn.execute(
            schema.ocr_quality.insert(),
            [
                # Kept per group: template, field type, evidence.
                {"field_type": "bantuan_form|text|page", "shard": 0, "seen": 200, "correct": 190},
                {"field_type": "bantuan_form|date|page", "shard": 0, "seen": 200, "correct": 4},
            ],
        )
    ana = worker(stores, "ana")
    draws = random.Random(5)
    shown = claim_tasks(stores.db, ana, rules, count=120, draws=draws)
    blind = {kind: [t.blind for t in shown if t.field_kind == kind] for kind in ("text", "date")}
    share = {kind: sum(b) / len(b) for kind, b in blind.items()}
    # About 94% of text fields blind (the OCR's doubted text proved right 190 of 200), dates
    # at the floor of 10%; a blind lease never carries the guess.
    assert share["text"] > 0.8 and share["date"] < 0.25
    assert all(t.ocr_text == "" for t in shown if t.blind)
    assert all(t.ocr_text for t in shown if not t.blind)
    still = claim_tasks(stores.db, ana, rules.model_copy(update={"blind_follows_ocr": False}))
    assert still[0].blind == shown[0].blind  # a held lease keeps what it showed


def test_passing_probation_turns_earlier_answers_into_votes_at_once(stores: Stores) -> None:
    rules = CrowdSettings(
        gold_every=0, blind_share=1.0, probation_min_gold=1, target_posterior=0.98
    )
    gold_ids = _gold_fields(stores, 1)
    page = seed_page(stores, [("postcode", "postcode", "4O100", 40.0)])
    ben, ana = worker(stores, "ben"), worker(stores, "ana", proven=False)
    for who, key in ((ben, "b"), (ana, "a")):
        task = claim_next(stores.db, who, rules)
        assert task is not None and task.field_name == "postcode"
        out = submit_answer(stores.db, task.task_id, who, "value", "40100", key, rules)
        assert not out.settled  # Ben alone is one vote; Ana's is no vote yet
    # Ana's gold comes, she passes it: her answer on the postcode counts now, and settles it.
    due = rules.model_copy(update={"gold_every": 1, "gold_every_probation": 1})
    gold = claim_next(stores.db, ana, due)
    assert gold is not None and gold.field_id == gold_ids[0]
    out = submit_answer(stores.db, gold.task_id, ana, "value", "RIGHT0", "a-gold", rules)
    assert out.gold_correct is True and out.also_completed == (page,)
    postcode = fields_by_name(stores)["postcode"]
    assert (postcode.status, postcode.value) == ("settled", "40100")  # type: ignore[attr-defined]


def test_letting_a_wrong_prefill_through_on_gold_measures_checking_not_keying(
    stores: Stores,
) -> None:
    # Gold at every task (after a miss too), shown pre-filled.
    rules = CrowdSettings(gold_every=1, gold_every_suspect=1, blind_share_gold=0.0)
    _gold_fields(stores, 2)  # the OCR read WRONG; the answers are RIGHT0, RIGHT1
    ana = worker(stores, "ana")
    q = schema.worker_quality

    def counters() -> tuple[int, int, int, int]:
        with stores.db.connect() as conn:
            row = conn.execute(
                select(q.c.gold_seen, q.c.gold_correct, q.c.anchor_seen, q.c.anchor_accepted)
            ).one()
        return tuple(row)  # type: ignore[return-value]

    first = claim_next(stores.db, ana, rules)
    assert first is not None and first.ocr_text == "WRONG"
    out = submit_answer(stores.db, first.task_id, ana, "value", "WRONG", "a1", rules)
    assert out.gold_correct is False
    assert counters() == (0, 0, 1, 1)  # let it through: anchoring, not a keying error
    second = claim_next(stores.db, ana, rules)
    assert second is not None
    right = f"RIGHT{second.field_name[1:]}"
    submit_answer(stores.db, second.task_id, ana, "value", right, "a2", rules)
    assert counters() == (1, 1, 2, 1)  # corrected it: right on gold, and not anchored


def test_workers_on_probation_spread_out_and_practise_on_gold_when_work_is_covered(
    stores: Stores,
) -> None:
    rules = CrowdSettings(
        gold_every=10**6,  # gold hardly ever due: what they get comes from the cap
        gold_every_probation=10**6,
        probation_answers_per_task=2,
        blind_share=1.0,
        target_posterior=0.9999,
    )
    gold_ids = _gold_fields(stores, 3)
    seed_page(stores, [("city", "text", "KLANG", 40.0)])
    new = [worker(stores, f"new{i}", proven=False) for i in range(3)]
    for n, wid in enumerate(new[:2]):
        task = claim_next(stores.db, wid, rules)
        assert task is not None and task.field_name == "city"
        submit_answer(stores.db, task.task_id, wid, "value", "KLANG", f"n{n}", rules)
    # Two answers wait on the city already: the third new worker practises on gold instead.
    third = claim_next(stores.db, new[2], rules)
    assert third is not None and third.field_id in gold_ids and _is_gold(stores, third.task_id)
    # A proven worker still gets the field: their answer is the vote it needs.
    steady = claim_next(stores.db, worker(stores, "steady"), rules)
    assert steady is not None and steady.field_name == "city"


def test_gold_whose_guess_is_right_is_always_shown_blind(stores: Stores) -> None:
    # Accepting a right pre-filled guess is right: it would let a pre-fill spammer pass.
    rules = CrowdSettings(gold_every=1, blind_share_gold=0.0)
    _gold_fields(stores, 3, ocr="RIGHT0")  # g0's guess is right; g1's and g2's are not
    ana = worker(stores, "ana")
    shown = {}
    for n in range(3):
        task = claim_next(stores.db, ana, rules)
        assert task is not None
        shown[task.field_name] = (task.blind, task.ocr_text)
        right = f"RIGHT{task.field_name[1:]}"
        submit_answer(stores.db, task.task_id, ana, "value", right, f"a{n}", rules)
    assert shown == {"g0": (True, ""), "g1": (False, "RIGHT0"), "g2": (False, "RIGHT0")}
