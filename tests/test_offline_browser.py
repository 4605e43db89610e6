"""Work that survives a weak line, in a real browser at 360x640 with touch: ten answers typed
offline wait on the phone and reach the server exactly once when the line comes back, a
reload offline still shows a task (the service worker's shell, filled from the reserve the
page kept), and a task another worker took while the phone was offline is dropped from the
reserve with a word. Screenshots under test-artifacts/."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from sqlalchemy import func, select, update

from kerani.core.settings import Settings
from kerani.people.workers import add_person, person_by_code
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.database import as_utc, utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_review_browser import (
    VIEWPORTS,
    browser,
    current_task,
    next_task,
    shot,
    sign_in_with_access_code,
    snippet_loaded,
)

__all__ = ["browser"]  # the module's Chromium, shared from the review page's tests

RESERVE = 10  # crowd.offline_reserve: tasks kept besides the one shown


def seeded(settings: Settings, stores: Stores) -> tuple[str, int]:
    """Two receipts of twelve lines waiting for people, and a worker who may take them all."""
    for page in range(2):
        lines = [(f"line_{i:03d}", "line", f"TOTAL {page}{i}.00", 40.0) for i in range(12)]
        seed_page(stores, lines, template="receipt", pictures={n: g for n, _, g, _ in lines})
    settings.crowd.gold_every = 0  # the test knows every task it gets
    settings.crowd.max_fields_per_document = 100
    settings.crowd.offline_reserve = RESERVE
    code = add_person(stores.db, "siti", "worker")
    with stores.db.begin() as conn:  # practice is another test's
        conn.execute(update(schema.workers).values(practice_passed_at=utcnow()))
    return code, person_by_code(stores.db, code).id


def kept(page: Page) -> list[str]:
    """The ids of the tasks the page keeps on the phone (the one shown first)."""
    return list(
        page.evaluate(
            "() => JSON.parse(localStorage.getItem('kerani-reserve')).tasks.map(t => t.task_id)"
        )
    )


def ready_for_a_dead_spot(page: Page) -> None:
    """Wait until the reserve is full and the service worker controls the page."""
    page.wait_for_function(
        "n => (JSON.parse(localStorage.getItem('kerani-reserve') || '{}').tasks || []).length > n",
        arg=RESERVE,
    )
    page.wait_for_function("() => !!navigator.serviceWorker.controller")


def waiting(page: Page) -> int:
    return int(str(page.get_attribute("#net", "data-waiting")))


def answer_rows(stores: Stores, worker_id: int) -> list[Any]:
    a = schema.answers
    with stores.db.connect() as conn:
        return list(
            conn.execute(
                select(a.c.task_id, a.c.value, a.c.idempotency_key).where(
                    a.c.worker_id == worker_id
                )
            ).all()
        )


def sign_out(page: Page) -> None:
    """Tap Sign out, in the menu of the worker's one-line header (opened if closed)."""
    button = page.locator("header button:has-text('Sign out')")
    if not button.is_visible():
        page.tap("#menu summary")
    button.tap()


def phone(browser: Browser) -> tuple[BrowserContext, Page]:
    context = browser.new_context(**VIEWPORTS["phone"])
    return context, context.new_page()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_ten_answers_typed_offline_reach_the_server_once_when_the_line_comes_back(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    code, worker_id = seeded(settings, stores)
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context, page = phone(browser)
    try:
        sign_in_with_access_code(page, server.url, code)
        page.wait_for_selector("#value")
        ready_for_a_dead_spot(page)
        assert page.get_attribute("#net", "data-online") == "1"

        # The line goes: ten answers, each showing the next task kept on the phone at once.
        context.set_offline(True)
        page.wait_for_function("() => document.getElementById('net').dataset.online === '0'")
        given: dict[str, str] = {}
        for i in range(10):
            task = current_task(page)
            assert snippet_loaded(page)
            page.tap("#value")
            page.fill("#value", f"TOTAL {i}.50")
            page.tap("#submit")
            given[task] = f"TOTAL {i}.50"
            next_task(page, task)
        assert waiting(page) == 10
        assert "10 answers waiting to send" in page.inner_text("#net")
        assert "Offline" in page.inner_text("#net")
        # Nothing is counted done that the server does not have.
        assert page.inner_text("#progress").startswith("Today: 0 done")
        shot(page, "phone", "offline-indicator")

        # A reload offline: the service worker's shell, filled from the reserve (no error page).
        last = current_task(page)
        page.reload()
        page.wait_for_selector("#value")
        assert page.get_attribute("#answer", "data-shell") is not None  # /review/offline
        assert current_task(page) == last
        assert snippet_loaded(page) and page.inner_text("#label") != ""
        assert waiting(page) == 10
        # The last task kept: after it, the page says there is no more and why.
        page.tap("#value")
        page.fill("#value", "TOTAL 10.50")
        page.tap("#submit")
        given[last] = "TOTAL 10.50"
        page.wait_for_selector("text=No more tasks saved on this phone")
        assert "your 11 answers will be sent when you are back online" in page.inner_text("#task")
        assert not page.is_visible("#submit")
        assert answer_rows(stores, worker_id) == []
        shot(page, "phone", "offline-empty")

        # The line comes back: every answer arrives, each exactly once, and the page goes on.
        context.set_offline(False)
        page.wait_for_function(
            "() => document.getElementById('net').dataset.waiting === '0'", timeout=30_000
        )
        assert "all answers sent" in page.inner_text("#net")
        page.wait_for_selector("#value")
        rows = answer_rows(stores, worker_id)
        assert len(rows) == 11 and {r.task_id: r.value for r in rows} == given
        with stores.db.connect() as conn:
            total = conn.execute(select(func.count()).select_from(schema.answers)).scalar_one()
        assert total == 11
        page.wait_for_function(
            "() => document.getElementById('progress').textContent.startsWith('Today: 11 done')"
        )
        shot(page, "phone", "offline-back-online")
    finally:
        context.close()
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_saved_tasks_taken_by_someone_else_while_offline_are_dropped_with_a_word(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    code, worker_id = seeded(settings, stores)
    ben = person_by_code(stores.db, add_person(stores.db, "ben", "worker")).id
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context, page = phone(browser)
    try:
        sign_in_with_access_code(page, server.url, code)
        page.wait_for_selector("#value")
        ready_for_a_dead_spot(page)
        context.set_offline(True)
        page.wait_for_function("() => document.getElementById('net').dataset.online === '0'")
        shown = current_task(page)
        page.tap("#value")
        page.fill("#value", "TOTAL 9.99")
        page.tap("#submit")
        next_task(page, shown)
        # Sign-out would make the browser forget the answer waiting: not while offline.
        sign_out(page)
        page.wait_for_selector("text=You are offline: you can sign out once")
        assert not page.is_visible("header button:has-text('Sign out')")  # the menu closed
        shot(page, "phone", "offline-no-signout")
        assert page.url.endswith("/review")
        saved = kept(page)
        taken = saved[2:4]
        # Offline longer than a lease: every lease of hers lapses, and Ben's claim takes two
        # of the tasks she kept (the others nobody took: still hers).
        t = schema.tasks
        with stores.db.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.lease_worker_id == worker_id)
                .values(lease_expires_at=utcnow() - timedelta(seconds=30))
            )
            conn.execute(
                update(t)
                .where(t.c.id.in_(taken))
                .values(lease_worker_id=ben, lease_expires_at=utcnow() + timedelta(seconds=300))
            )
        context.set_offline(False)
        page.wait_for_selector("text=2 saved tasks had expired and were returned", timeout=30_000)
        page.wait_for_function("() => document.getElementById('net').dataset.waiting === '0'")
        shot(page, "phone", "offline-lapsed")
        now_kept = kept(page)
        assert not set(taken) & set(now_kept)
        # The answer typed offline for a lapsed lease nobody took counts.
        assert [(r.task_id, r.value) for r in answer_rows(stores, worker_id)] == [
            (shown, "TOTAL 9.99")
        ]
        # What she still has is hers again, with a fresh lease, in the order she had it.
        assert now_kept[: len(saved) - 2] == [i for i in saved if i not in taken]
        with stores.db.connect() as conn:
            leases = dict(
                conn.execute(
                    select(t.c.id, t.c.lease_expires_at).where(
                        t.c.id.in_(now_kept), t.c.lease_worker_id == worker_id
                    )
                )
                .tuples()
                .all()
            )
        assert set(leases) == set(now_kept)
        assert all(as_utc(until) > utcnow() for until in leases.values())
        # The next answer clears the word.
        page.tap("#submit")
        page.wait_for_function("() => document.getElementById('offline-word').hidden")
        page.wait_for_function("() => document.getElementById('net').dataset.waiting === '0'")
        # Signed out, the browser keeps nothing of hers: no tasks, snippets or cached pages.
        sign_out(page)
        page.wait_for_url("**/signin")
        assert page.evaluate("() => localStorage.length") == 0
        assert page.evaluate("async () => (await caches.keys()).length") == 0
        registrations = "async () => (await navigator.serviceWorker.getRegistrations()).length"
        assert page.evaluate(registrations) == 0
    finally:
        context.close()
        server.stop()
