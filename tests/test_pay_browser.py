"""Pay in a real browser at 360x640 with touch: the rates a worker is shown before starting,
their held pay and statement, a paused spammer's pay shown as not paid and why, and the
operator's pay page. Screenshots under test-artifacts/."""

from __future__ import annotations

import random

import pytest
from playwright.sync_api import Browser
from sqlalchemy import select, update

from kerani.core.settings import CrowdSettings, Settings
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.gold import make_gold
from kerani.microtasks.leases import claim_next
from kerani.microtasks.statements import week_label, week_start
from kerani.people.workers import add_person, invite_worker, person_by_code
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_review_browser import PIN, VIEWPORTS, browser, shot, sign_in_with_access_code

__all__ = ["browser"]  # the module's Chromium, shared from the review page's tests

CATCHING = CrowdSettings(
    gold_every=2,
    gold_every_probation=2,
    blind_share=1.0,
    blind_share_gold=1.0,
    quarantine_min_gold=2,
    max_fields_per_document=100,
)


def _spammer_paused_on_checks(stores: Stores) -> int:
    """A worker who submits junk until two failed checks pause them; returns their number."""
    gold = seed_page(
        stores, [(f"line_{i:03d}", "line", "WRONG", 10.0) for i in range(6)], template="receipt"
    )
    with stores.db.connect() as conn:
        ids = list(
            conn.execute(
                select(schema.fields.c.id).where(schema.fields.c.page_id == gold)
            ).scalars()
        )
    make_gold(stores.db, {fid: f"TOTAL {i}.00" for i, fid in enumerate(ids)})
    wid = person_by_code(stores.db, add_person(stores.db, "spam", "worker", practised=True)).id
    draws = random.Random(4)
    for n in range(30):
        try:
            task = claim_next(stores.db, wid, CATCHING, draws=draws)
        except Exception:  # paused: no more tasks
            break
        if task is None:
            break
        submit_answer(stores.db, task.task_id, wid, "value", "zzz", f"spam-{n}", CATCHING)
    return wid


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rates_before_work_held_pay_and_a_paused_spammers_pay_on_a_phone(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    lines = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 40.0) for i in range(6)]
    seed_page(stores, lines, template="receipt", pictures={n: g for n, _, g, _ in lines})
    spammer = _spammer_paused_on_checks(stores)
    settings.crowd.gold_every = 0  # the honest worker's session knows every task it gets
    _number, invite = invite_worker(stores.db, "siti", 14)
    with stores.db.begin() as conn:
        # Practice is another test's: both workers count as having passed it.
        conn.execute(update(schema.workers).values(practice_passed_at=utcnow()))
    operator = add_person(stores.db, "olivia", "operator")
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS["phone"])
    page = context.new_page()
    try:
        page.goto(f"{server.url}/join")
        page.fill("#invite", invite)
        page.fill("#pin", PIN)
        page.fill("#pin_again", PIN)
        page.tap("button.primary")
        page.wait_for_selector("#rates")
        # Before any work: what each kind of task pays, and how pay works.
        assert "Text line: 5 sen per answer" in page.inner_text("#rates")
        assert "Not known yet" in page.inner_text("#per-hour")
        shot(page, "phone", "pay-rates-before-work")
        page.tap("#rates a[href='/review']")
        page.wait_for_selector("#value")
        assert page.inner_text("#rate") == "This task pays 5 sen"
        page.tap("#submit")
        page.wait_for_function(
            "() => JSON.parse(localStorage.getItem('kerani-outbox') || '[]').length === 0"
        )
        page.goto(f"{server.url}/me")
        assert page.inner_text("#pay-held").startswith("RM 0.05")
        shot(page, "phone", "pay-my-work-held")
        page.tap("#statements a")
        page.wait_for_selector("#statement")
        assert "waits for a check on your work" in page.inner_text("#statement")
        shot(page, "phone", "pay-statement")
        context.clear_cookies()

        # The spammer, paused by the checks, sees that none of it is paid, and why.
        sign_in_with_access_code(page, server.url, operator)
        page.goto(
            f"{server.url}/operator/workers/{spammer}/statement/{week_label(week_start(utcnow()))}"
        )
        text = page.inner_text("#statement")
        assert "account paused after failing checks" in text
        assert page.inner_text("#st-credited") == "RM 0.00"
        assert page.inner_text("#st-voided") != "RM 0.00"
        shot(page, "phone", "pay-spammer-statement")
        page.goto(f"{server.url}/operator/pay")
        page.wait_for_selector("#rates")
        shot(page, "phone", "pay-operator")
    finally:
        context.close()
        server.stop()
