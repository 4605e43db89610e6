"""The review pages in a real browser: Playwright driving Debian's Chromium on a real server,
at a phone viewport (touch) and a desktop one (keyboard). Screenshots of every screen are
saved under test-artifacts/ for a person to look at."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import select, update

from kerani.core.settings import Settings
from kerani.people.workers import add_person, invite_worker
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PIN = "402917"
# (field, type, OCR guess, what the snippet shows)
FORM = [
    ("full_name", "text", "SITI AMINAH BT ISMAIL", "SITI AMINAH BT ISMAIL"),
    ("date_of_birth", "date", "12/O3/1985", "12/03/1985"),
    ("phone", "phone", "012-3456789", "012-3456789"),
    ("postcode", "postcode", "4O100", "40100"),
    ("address", "text", "12 JALAN MAWAR", "12 JALAN MAWAR 3"),
    ("city", "text", "SHAH ALAM", "SHAH ALAM"),
    ("household_size", "number", "4", "4"),
]
XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'
VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 360, "height": 640}, "has_touch": True, "is_mobile": True},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is missing at {CHROMIUM}: run scripts/bootstrap.sh --dev")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


def shot(page: Page, device: str, screen: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{device}-{screen}.png"), full_page=True)


def sign_in_with_access_code(page: Page, url: str, code: str) -> None:
    """Sign in through the staff form (access code) of the sign-in page."""
    page.goto(f"{url}/signin")
    page.click("summary")
    page.fill("#code", code)
    page.click("form[action='/signin/code'] button")


def snippet_loaded(page: Page) -> bool:
    # A broken image has naturalWidth 0.
    return bool(page.eval_on_selector("#snippet", "img => img.complete && img.naturalWidth > 0"))


def current_task(page: Page) -> str:
    return str(page.get_attribute("#answer", "action")).rsplit("/", 1)[1]


def next_task(page: Page, before: str) -> str:
    page.wait_for_function(
        "b => document.getElementById('answer').getAttribute('action').split('/').pop() !== b",
        arg=before,
    )
    return current_task(page)


def answers_of(stores: Stores, worker: str) -> dict[str, tuple[str, str]]:
    a, w = schema.answers, schema.workers
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(a.c.task_id, a.c.kind, a.c.value)
            .join(w, w.c.id == a.c.worker_id)
            .where(w.c.name == worker)
        ).all()
    return {r.task_id: (r.kind, r.value) for r in rows}


@pytest.mark.parametrize("device", ["phone", "desktop"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_worker_session_in_the_browser(
    browser: Browser, settings: Settings, stores: Stores, device: str
) -> None:
    seed_page(
        stores,
        [(n, k, g, 40.0) for n, k, g, _ in FORM],
        pictures={n: truth for n, _, _, truth in FORM},
    )
    lines = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 40.0) for i in range(8)]
    seed_page(stores, lines, template="receipt", pictures={n: g for n, _, g, _ in lines})
    number, invite = invite_worker(stores.db, "siti", 14)
    with stores.db.begin() as conn:
        # Practice is tests/test_onboarding_browser.py's: siti counts as having passed it.
        conn.execute(update(schema.workers).values(practice_passed_at=utcnow()))
    settings.crowd.gold_every = 0  # no gold here: the test knows every answer it gives
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    touch = device == "phone"
    context = browser.new_context(**VIEWPORTS[device])
    page = context.new_page()
    dialogs: list[str] = []

    def refuse_dialog(dialog: Any) -> None:
        # A worker's text that opens a dialog would be a script run from their answer.
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", refuse_dialog)
    try:
        # Join with the invite code, then sign in again with worker number and PIN.
        page.goto(f"{server.url}/review")
        assert page.url.endswith("/signin")
        shot(page, device, "signin")
        page.click("text=Join with your invite code")
        page.fill("#invite", invite.lower())
        page.fill("#pin", PIN)
        page.fill("#pin_again", PIN)
        shot(page, device, "join")
        page.click("button.primary")
        page.wait_for_selector("#worker-number")
        assert page.inner_text("#worker-number") == str(number)
        shot(page, device, "welcome")
        page.click("#menu summary")  # a worker's header is one line: sign-out is in its menu
        page.click("header button:has-text('Sign out')")
        page.fill("#number", str(number))
        page.fill("#pin", PIN)
        page.click("button.primary")
        page.wait_for_selector("#value")

        # Five snippets: typed over the selected guess (keyboard) or corrected by touch.
        shot(page, device, "review")
        given: dict[str, tuple[str, str]] = {}
        for i, (_name, _kind, guess, truth) in enumerate(FORM[:5]):
            task = current_task(page)
            assert page.input_value("#value") == guess and snippet_loaded(page)
            if i == 2:
                # A reload in the middle of a task keeps its lease: the same task comes back.
                page.reload()
                page.wait_for_selector("#value")
                assert current_task(page) == task
            if i == 3:
                (page.tap if touch else page.click)("#unreadable")
                given[task] = ("unreadable", "")
            elif touch:
                page.tap("#value")
                page.fill("#value", truth)
                page.tap("#submit")
                given[task] = ("value", truth)
            else:
                # The guess is selected: typing replaces it and Enter submits.
                page.keyboard.type(truth)
                page.keyboard.press("Enter")
                given[task] = ("value", truth)
            next_task(page, task)
        # The answer typed next is a script: it must stay text wherever it is shown again.
        task = current_task(page)
        page.fill("#value", XSS)
        page.keyboard.press("Enter")
        given[task] = ("value", XSS)
        next_task(page, task)
        # Shown without a page load since the reload (tasks 3 to 5 and the script).
        page.wait_for_function("() => window.keraniTimings.length >= 3")
        page.wait_for_function("() => (localStorage.getItem('kerani-outbox') || '[]') === '[]'")
        assert answers_of(stores, "siti") == given

        # Another worker cannot see or answer a task leased to this one.
        held = current_task(page)
        other = browser.new_context(**VIEWPORTS[device])
        other_page = other.new_page()
        sign_in_with_access_code(
            other_page, server.url, add_person(stores.db, "intruder", "worker", practised=True)
        )
        assert other_page.goto(f"{server.url}/snippets/{held}").status == 403  # type: ignore[union-attr]
        other_page.goto(f"{server.url}/me")
        refused = other_page.request.post(
            f"{server.url}/review/{held}",
            form={
                "csrf": str(other_page.get_attribute("input[name=csrf]", "value")),
                "idempotency_key": "intruder-1",
                "value": "HIJACK",
            },
        )
        assert refused.status == 403
        other.close()

        # Column mode: a screen of one field type; fix the wrong ones, submit once.
        page.goto(f"{server.url}/column")
        page.wait_for_selector("#column")
        shot(page, device, "column")
        rows = page.locator(".row input[type=text]")
        ids = page.locator("input[name=task_id]")
        assert rows.count() >= 2
        kinds = {answers_of(stores, "siti").get(ids.nth(i).input_value()) for i in range(2)}
        assert kinds == {None}  # tasks not answered yet
        fixes = {0: "TOTAL 0.50", 1: "TOTAL 1.05"}
        for i, text in fixes.items():
            if touch:
                rows.nth(i).tap()  # opens the row with its text selected
            else:
                rows.nth(i).focus()  # as by Tab: typing opens the row and replaces its text
            page.keyboard.type(text)
            page.keyboard.press("Enter")  # ends this correction, does not submit the column
        assert page.url.endswith("/column") and rows.nth(0).input_value() == "TOTAL 0.50"
        shot(page, device, "column-fixed")
        column = {ids.nth(i).input_value(): rows.nth(i).input_value() for i in range(rows.count())}
        while page.locator("#rows-next").is_visible():  # a screenful of rows at a time
            page.click("#rows-next")
        page.click("#submit-column")
        page.wait_for_load_state()
        recorded = answers_of(stores, "siti")
        assert {t: recorded[t][1] for t in column} == column

        # Language: switch to Bahasa Malaysia; the choice is kept after a reload.
        page.goto(f"{server.url}/me")
        page.click("#menu summary")  # the language is in the worker's menu
        page.click("#lang-ms")
        page.wait_for_selector("h1:has-text('Kerja saya')")
        page.reload()
        assert page.locator("h1").first.inner_text() == "Kerja saya"
        assert page.get_attribute("html", "lang") == "ms"
        shot(page, device, "me-ms")
        page.goto(f"{server.url}/review")
        assert page.is_visible("text=Hantar")
        shot(page, device, "review-ms")

        # The operator sees the worker's script as text, and it does not run (the fields
        # made public: personal answers come masked on the status page).
        with stores.db.begin() as conn:
            conn.execute(schema.fields.update().values(sensitivity="public"))
        operator = browser.new_context(**VIEWPORTS[device])
        op_page = operator.new_page()
        op_page.on("dialog", refuse_dialog)
        sign_in_with_access_code(op_page, server.url, add_person(stores.db, "olivia", "operator"))
        op_page.wait_for_selector("#latest-answers")
        assert XSS in op_page.inner_text("#latest-answers")
        assert op_page.evaluate("window.pwned") is None
        shot(op_page, device, "operator-status")
        operator.close()
        assert dialogs == []
    finally:
        context.close()
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_basic_submit_works_without_javascript(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    seed_page(stores, [(n, k, g, 40.0) for n, k, g, _ in FORM[:2]])
    code = add_person(stores.db, "ana", "worker", practised=True)
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(java_script_enabled=False, **VIEWPORTS["phone"])
    page = context.new_page()
    try:
        sign_in_with_access_code(page, server.url, code)
        page.wait_for_selector("#value")
        first = current_task(page)
        page.fill("#value", "SITI AMINAH BT ISMAIL")
        page.click("#submit")  # a plain form post; the server shows the next task
        page.wait_for_selector("#value")
        assert current_task(page) != first
        page.click("#blank")
        page.wait_for_selector("text=No tasks right now")
        shot(page, "nojs", "done")
    finally:
        context.close()
        server.stop()
    kinds = sorted(k for k, _ in answers_of(stores, "ana").values())
    assert kinds == ["blank", "value"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_background_answer_shows_where_things_stand(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    seed_page(stores, [(n, k, g, 40.0) for n, k, g, _ in FORM])
    code = add_person(stores.db, "ana", "worker", practised=True)
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS["desktop"])
    page = context.new_page()
    try:
        sign_in_with_access_code(page, server.url, code)
        page.wait_for_selector("#value")
        page.wait_for_timeout(300)  # the reserve decoded
        # The operator pauses the account while the worker is typing.
        with stores.db.begin() as conn:
            conn.execute(
                schema.workers.update()
                .where(schema.workers.c.name == "ana")
                .values(quarantined=True)
            )
        page.keyboard.press("Enter")
        # The answer's reply is refused: the page reloads and says why.
        page.wait_for_selector("text=Your account is paused")
        shot(page, "desktop", "paused")
    finally:
        context.close()
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_script_sends_the_guess_it_showed_and_the_time_taken(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    seed_page(stores, [(n, k, g, 40.0) for n, k, g, _ in FORM[:3]])
    code = add_person(stores.db, "ana", "worker", practised=True)
    settings.crowd.gold_every = 0
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS["desktop"])
    page = context.new_page()
    shown: dict[str, str] = {}
    try:
        sign_in_with_access_code(page, server.url, code)
        page.wait_for_selector("#value")
        for _ in range(2):
            task = current_task(page)
            shown[task] = page.input_value("#value")
            assert page.input_value("input[name=prefilled]") == shown[task]
            page.wait_for_timeout(400)  # the worker reads the snippet (and the reserve decodes)
            page.keyboard.type("CHANGED")
            page.keyboard.press("Enter")
            next_task(page, task)
        page.wait_for_function("() => (localStorage.getItem('kerani-outbox') || '[]') === '[]'")
    finally:
        context.close()
        server.stop()
    a = schema.answers
    with stores.db.connect() as conn:
        rows = conn.execute(select(a.c.task_id, a.c.prefilled, a.c.duration_ms)).all()
    assert {r.task_id: r.prefilled for r in rows} == shown
    # From showing each task to its submit: at least the wait, far less than a minute.
    assert all(400 <= r.duration_ms < 60_000 for r in rows)
