"""Fair, visible pay on SQLite and PostgreSQL: pay held until a check vouches for it, voided
for workers the checks find out, rates proposed from measured effort and confirmed, weekly
statements, and payouts made once."""

from __future__ import annotations

import csv
import io
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from kerani.core.errors import BadInputError, ForbiddenError
from kerani.core.settings import CrowdSettings, Settings
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.holds import release_due
from kerani.microtasks.leases import claim_next
from kerani.microtasks.ledger import worker_earnings
from kerani.microtasks.pay_rates import confirm_rates, propose_rates, proposed_rate
from kerani.microtasks.standing import set_standing
from kerani.microtasks.statements import (
    make_payout,
    parse_week,
    statement,
    week_label,
    week_start,
)
from kerani.people.workers import add_person
from kerani.records.payout_sheet import payout_csv
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page, sign_in_with_code
from tests.test_queue import _gold_fields as gold_fields
from tests.test_queue import worker


def gold_value(stores: Stores, task_id: str) -> str | None:
    with stores.db.connect() as conn:
        return conn.execute(
            select(schema.tasks.c.gold_value).where(schema.tasks.c.id == task_id)
        ).scalar_one()


def statuses(stores: Stores, wid: int) -> list[tuple[str, str]]:
    """(status, reason) of each of a worker's payments, in answer order."""
    led = schema.ledger
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(led.c.status, led.c.reason)
            .where(led.c.worker_id == wid)
            .order_by(led.c.answer_id)
        ).all()
    return [(str(r[0]), str(r[1])) for r in rows]


def work(
    stores: Stores,
    wid: int,
    rules: CrowdSettings,
    answers: int,
    *,
    gold_right: bool,
    seed: int = 1,
    duration_ms: int | None = None,
) -> list[bool | None]:
    """Answer up to `answers` tasks: fields with an honest "X" (often wrong), gold right or
    wrong. Returns, per answer, None for a field, or whether the gold was passed."""
    draws = random.Random(seed)
    seen: list[bool | None] = []
    for n in range(answers):
        try:
            task = claim_next(stores.db, wid, rules, draws=draws)
        except ForbiddenError:
            break  # paused by the checks
        if task is None:
            break
        known = gold_value(stores, task.task_id)
        value = (known if gold_right else "NOPE") if known is not None else "X"
        key = f"{wid}-{seed}-{n}"
        out = submit_answer(
            stores.db, task.task_id, wid, "value", value, key, rules, duration_ms=duration_ms
        )
        seen.append(out.gold_correct)
    return seen


RULES = CrowdSettings(
    gold_every=3,
    gold_every_probation=3,
    gold_every_suspect=3,
    blind_share=1.0,
    blind_share_gold=1.0,
    probation_min_gold=2,
    probation_min_accuracy=0.5,
    quarantine_min_gold=3,
    quarantine_below=0.7,
    max_fields_per_document=100,
    target_posterior=0.9999,  # nothing settles: every field stays on offer
)


def test_pay_waits_for_a_passed_check_and_honest_mistakes_are_paid(stores: Stores) -> None:
    gold_fields(stores, 10)
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(30)])
    new = worker(stores, "nur", proven=False)
    seen: list[bool | None] = []
    after: list[list[tuple[str, str]]] = []  # the worker's payments after each answer
    for step in range(14):
        seen += work(stores, new, RULES, 1, gold_right=True, seed=step)
        after.append(statuses(stores, new))
    passed = [i for i, g in enumerate(seen) if g is True]
    assert len(passed) >= 3, seen  # enough checks came to pass probation and more
    # Probation needs two passed checks: the first vouches for nothing yet ...
    assert {status for status, _ in after[passed[0]]} == {"held"}
    # ... the one that proves them pays everything up to it, its "X" fields (wrong, honest)
    # included; what came after the last passed check waits for the next.
    assert after[passed[1]] == [("credited", "check_passed")] * (passed[1] + 1)
    last, pay = passed[-1], after[-1]
    assert pay[: last + 1] == [("credited", "check_passed")] * (last + 1)
    assert pay[last + 1 :] == [("held", "waiting_check")] * (len(pay) - last - 1)
    # One failed check is an honest mistake: nothing of theirs is voided for it.
    more = work(
        stores,
        new,
        RULES.model_copy(update={"quarantine_min_gold": 100}),
        1,
        seed=99,
        gold_right=False,
    )
    assert more  # an answer was given
    assert worker_earnings(stores.db, new).answers == len(seen) + len(more)  # none voided


def test_a_spammer_found_out_by_checks_is_not_paid_unless_the_operator_lifts_it(
    stores: Stores,
) -> None:
    gold_fields(stores, 10)
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(30)])
    spammer = worker(stores, "spam", proven=False)
    seen = work(stores, spammer, RULES, 30, gold_right=False)
    assert seen.count(False) == RULES.quarantine_min_gold  # paused on the third failed check
    pay = statuses(stores, spammer)
    assert pay == [("voided", "paused_on_checks")] * len(seen)
    assert worker_earnings(stores.db, spammer).total_sen == 0
    # Not in a payout, and their statement says why.
    made = make_payout(stores.db, None, utcnow(), RULES)
    assert spammer not in {r.worker_id for r in made.rows}
    week = statement(stores.db, spammer, week_start(utcnow()), RULES)
    assert week.total("voided") == sum(5 for _ in seen) and week.total("credited") == 0
    assert {x.reason for x in week.lines} == {"paused_on_checks"}
    # The operator overrules the checks: what they voided is paid after all.
    set_standing(stores.db, None, spammer, RULES, paused=False)
    assert statuses(stores, spammer) == [("credited", "unpaused")] * len(seen)


def test_held_pay_is_paid_on_trust_after_the_hold_unless_under_suspicion(stores: Stores) -> None:
    rules = RULES.model_copy(update={"gold_every": 0})  # no checks at all
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(6)])
    good, doubted = worker(stores, "good"), worker(stores, "doubted", suspect=True)
    for wid in (good, doubted):
        work(stores, wid, rules, 3, gold_right=True)
    with stores.db.begin() as conn:
        assert release_due(conn, rules) == 0  # not yet: the hold is a week
        later = utcnow() + timedelta(days=rules.pay_hold_days, minutes=1)
        assert release_due(conn, rules, now=later) == 3
    assert statuses(stores, good) == [("credited", "hold_ended")] * 3
    assert statuses(stores, doubted) == [("held", "waiting_check")] * 3


def test_rates_are_proposed_from_careful_workers_times_and_paid_once_confirmed(
    stores: Stores,
) -> None:
    rules = RULES.model_copy(update={"gold_every": 0, "pay_min_timed_answers": 30})
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(40)])
    seed_page(stores, [(f"a{i}", "amount", "1.00", 10.0) for i in range(5)])
    careful, spammer = worker(stores, "careful"), worker(stores, "fast", quarantined=False)
    work(stores, careful, rules, 32, gold_right=True, duration_ms=6_000)
    # A spammer on probation clicks through in a second: not careful, not measured.
    with stores.db.begin() as conn:
        conn.execute(
            update(schema.workers).where(schema.workers.c.id == spammer).values(proven=False)
        )
    work(stores, spammer, rules, 8, gold_right=True, duration_ms=1_000, seed=2)
    proposals = {(p.field_type, p.pay_kind): p for p in propose_rates(stores.db, rules)}
    text = proposals[("text", "field")]
    assert text.median_ms == 6_000 and text.measured >= 30
    # RM 8.72 an hour at 6 s a task is 1.45 sen a task: rounded up to whole sen.
    assert text.proposed_sen == proposed_rate(6_000, 872) == 2
    assert text.per_hour_sen(2) == 1_200 and text.per_hour_sen(text.current_sen) == 3_000
    amount = proposals[("amount", "field")]
    assert amount.proposed_sen is None  # too few timed answers to say
    assert text.cost_per_field_sen(2) is None  # nothing settled yet: no answers per field
    confirm_rates(stores.db, None, list(proposals.values()), rules)
    # The next answer to a text field earns the confirmed rate; an amount keeps the default.
    before = worker_earnings(stores.db, careful).total_sen
    work(stores, careful, rules, 1, gold_right=True, seed=5)
    assert worker_earnings(stores.db, careful).total_sen - before in (2, rules.rate_sen_field)
    led = schema.ledger
    with stores.db.connect() as conn:
        latest = conn.execute(
            select(led.c.field_type, led.c.amount_sen).order_by(led.c.id.desc()).limit(1)
        ).one()
    assert latest.amount_sen == (2 if latest.field_type == "text" else rules.rate_sen_field)
    with pytest.raises(BadInputError, match="timed answers"):
        confirm_rates(stores.db, None, [amount], rules)


def test_gold_is_paid_and_shown_as_the_field_work_it_looks_like(stores: Stores) -> None:
    rules = RULES.model_copy(update={"gold_every": 1, "gold_every_probation": 1})
    with stores.db.begin() as conn:
        conn.execute(
            schema.pay_rates.insert().values(
                field_type="text", pay_kind="field", rate_sen=3, effective_from=utcnow()
            )
        )
    gold_fields(stores, 3)
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(3)])
    wid = worker(stores, "ana")
    seen = work(stores, wid, rules, 3, gold_right=True)
    assert True in seen
    led = schema.ledger
    with stores.db.connect() as conn:
        paid = conn.execute(select(led.c.task_kind, led.c.amount_sen)).all()
    assert {(str(k), int(a)) for k, a in paid} >= {("gold", 3)}
    assert {int(a) for _, a in paid} == {3}
    week = statement(stores.db, wid, week_start(utcnow()), rules)
    assert {(x.field_type, x.pay_kind) for x in week.lines} == {("text", "field")}


def test_a_payout_is_made_once_and_later_credit_goes_into_the_next(stores: Stores) -> None:
    rules = RULES.model_copy(update={"gold_every": 0, "pay_hold_days": 0})
    seed_page(stores, [(f"f{i}", "text", "OCR", 10.0) for i in range(6)])
    ana = worker(stores, '=HYPERLINK("http://x")')
    bob = worker(stores, "bob")
    work(stores, ana, rules, 2, gold_right=True)
    work(stores, bob, rules, 1, gold_right=True)
    first = make_payout(stores.db, None, utcnow(), rules)  # the hold of 0 days has ended
    assert first.new and {r.worker_id: r.amount_sen for r in first.rows} == {ana: 10, bob: 5}
    again = make_payout(stores.db, None, first.period_end, rules)
    assert not again.new and again.id == first.id and again.rows == first.rows
    sheet = list(csv.DictReader(io.StringIO(payout_csv(first))))
    assert [(r["worker_number"], r["amount_sen"], r["amount_rm"]) for r in sheet] == [
        (str(ana), "10", "0.10"),
        (str(bob), "5", "0.05"),
    ]
    assert sheet[0]["worker_name"].startswith("'=")  # a spreadsheet will not run it
    work(stores, bob, rules, 1, gold_right=True, seed=3)
    second = make_payout(stores.db, None, utcnow(), rules)
    assert second.id != first.id and [(r.worker_id, r.amount_sen) for r in second.rows] == [
        (bob, 5)
    ]
    assert second.period_start == first.period_end
    with pytest.raises(BadInputError, match="still to come"):
        make_payout(stores.db, None, utcnow() + timedelta(days=1), rules)
    with pytest.raises(BadInputError, match="later period"):
        make_payout(stores.db, None, first.period_end - timedelta(hours=1), rules)


def test_weeks_run_monday_to_sunday_in_malaysia() -> None:
    # Sunday 23:30 in Kuala Lumpur is 15:30 UTC; Monday 00:30 there is Sunday 16:30 UTC.
    sunday_night = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)
    monday_early = datetime(2026, 12, 6, 16, 30, tzinfo=UTC)
    assert week_label(week_start(sunday_night)) == "2026-W49"
    assert week_label(week_start(monday_early)) == "2026-W50"
    assert parse_week("2026-W50") == week_start(monday_early)
    with pytest.raises(BadInputError, match="2026-W49"):
        parse_week("last week")


def test_workers_see_rates_before_work_and_where_their_pay_stands(
    settings: Settings, stores: Stores
) -> None:
    seed_page(
        stores, [(f"line_{i:03d}", "line", "OCR", 10.0) for i in range(3)], template="receipt"
    )
    code = add_person(stores.db, "siti", "worker", proven=True, practised=True)
    client = TestClient(create_app(settings, stores))
    sign_in_with_code(client, code)
    me = client.get("/me").text
    rate = settings.crowd.rate_sen_field
    assert f"Text line: {rate} sen per answer" in me  # before any work
    page = client.get("/review").text
    assert f"This task pays {rate} sen" in page
    task = re.search(r'action="/review/([^"]+)"', page).group(1)  # type: ignore[union-attr]
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    client.post(
        f"/review/{task}",
        data={"csrf": csrf, "idempotency_key": key, "value": "X", "duration_ms": "90000"},
    )
    me = client.get("/me").text
    assert re.search(rf'id="pay-held">RM 0\.{rate:02d}<', me)  # waits for a check
    # 5 sen over 90 s is RM 2.00 an hour.
    assert f"RM {rate * 40 // 100}.{rate * 40 % 100:02d} an hour" in me
    week = week_label(week_start(utcnow()))
    st = client.get(f"/me/statement/{week}").text
    assert "Waiting for a check" in st and "waits for a check on your work" in st
    assert client.get("/me/statement/next-week").status_code == 400


def test_an_operator_confirms_rates_and_downloads_a_payout(
    settings: Settings, stores: Stores
) -> None:
    crowd = settings.crowd.model_copy(update={"pay_min_timed_answers": 3, "gold_every": 0})
    settings = settings.model_copy(update={"crowd": crowd})
    seed_page(
        stores, [(f"line_{i:03d}", "line", "OCR", 10.0) for i in range(4)], template="receipt"
    )
    wid = worker(stores, "ana")
    work(stores, wid, crowd, 4, gold_right=True, duration_ms=12_000)
    code = add_person(stores.db, "olivia", "operator")
    client = TestClient(create_app(settings, stores))
    sign_in_with_code(client, code)
    page = client.get("/operator/pay").text
    assert "12.0 s" in page and "RM 15.00" in page  # 5 sen a task, 300 tasks an hour
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    done = client.post("/operator/pay/rates", data={"csrf": csrf})
    assert done.status_code == 200 and "Rates confirmed: line 5 sen → 3 sen" in done.text
    with stores.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.pay_rates)).scalar() == 1
    with stores.db.begin() as conn:  # the week's pay was vouched for
        conn.execute(update(schema.ledger).values(status="credited", reason="check_passed"))
    this_week = week_label(week_start(utcnow()) - timedelta(days=7))
    made = client.post("/operator/payouts", data={"csrf": csrf, "week": this_week})
    assert "Payout 1:" in made.text
    sheet = client.get("/operator/payouts/1.csv")
    assert sheet.headers["content-type"].startswith("text/csv")
    assert "attachment" in sheet.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(sheet.text)))
    # Paid this week, after the period's end: the next payout's.
    assert rows == []
    again = client.post("/operator/payouts", data={"csrf": csrf, "week": this_week})
    assert "was paid out already" in again.text
