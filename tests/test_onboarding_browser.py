"""A new worker's way in, in a real browser on a 360x640 touch phone: join with an invite,
the introduction's screens, the practice round with feedback on each answer (one wrong),
passed, and then paid work with its Help; paid work before practice leads to practice; a
failed round and the introduction in Bahasa Malaysia. Screenshots in test-artifacts/."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page

from kerani.core.settings import Settings
from kerani.microtasks.practice import answer_practice, practice_item, round_items
from kerani.people.workers import add_person, invite_worker, person_by_code
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_review_browser import PIN, VIEWPORTS, browser, shot, sign_in_with_access_code

__all__ = ["browser"]  # the module's Chromium, shared with the review page's tests

PHONE = VIEWPORTS["phone"]
LINES = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 40.0) for i in range(6)]


def small_controls(page: Page) -> list[str]:
    """Buttons, inputs, button links and the Help of the main part under 44x44 CSS px."""
    found: list[str] = page.eval_on_selector_all(
        "main button, main input:not([type=hidden]), main a.button, main summary,"
        " main .field-help a",
        """els => els.filter(e => e.offsetParent !== null).map(e => {
            const r = e.getBoundingClientRect();
            return [e.id || e.name || e.textContent.trim(), r.width, r.height];
        }).filter(([, w, h]) => w < 44 || h < 44).map(([n, w, h]) => `${n}: ${w}x${h}`)""",
    )
    return found


def fits(page: Page) -> None:
    """The page fits the phone's width (no sideways scrolling) and its controls a thumb."""
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert small_controls(page) == []


def illustration_shown(page: Page) -> bool:
    return bool(
        page.eval_on_selector(".illustration", "img => img.complete && img.naturalWidth > 0")
    )


def answer_item(page: Page, wrong: bool = False) -> str:
    """Answer the practice item on screen (right, or wrong on purpose); its id."""
    item_id = str(page.get_attribute("input[name=item]", "value"))
    item = practice_item(item_id)
    if wrong:
        page.fill("#value", "RM 5450")
        page.tap("#submit")
    elif item.kind == "value":
        page.fill("#value", item.value)
        page.tap("#submit")
    else:
        page.tap(f"#{item.kind}")
    page.wait_for_selector("#verdict")
    return item_id


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_new_worker_joins_learns_practises_and_gets_paid_work_on_a_phone(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    seed_page(stores, LINES, template="receipt", pictures={n: g for n, _, g, _ in LINES})
    settings.crowd.gold_every = 0
    number, invite = invite_worker(stores.db, "aminah", 14)
    failing = add_person(stores.db, "rahim", "worker")
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**PHONE)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/join")
        page.fill("#invite", invite)
        page.fill("#pin", PIN)
        page.fill("#pin_again", PIN)
        with page.expect_navigation():
            page.tap("button.primary")
        assert page.url.endswith("/welcome/1")
        assert f"Your worker number is {number}" in page.inner_text("#welcome")
        # Paid work waits for practice: the review page leads back to the introduction.
        page.goto(f"{server.url}/review")
        assert page.url.endswith("/welcome/1")
        for step in range(1, 5):
            assert page.inner_text("#welcome-step") == f"Step {step} of 4"
            assert illustration_shown(page)
            fits(page)
            shot(page, "phone", f"onboarding-welcome-{step}-en")
            with page.expect_navigation():
                page.tap("#next")
        assert not page.is_visible("#field-tip")  # the Help opens with a tap
        assert page.url.endswith("/practice")
        assert page.inner_text("#practice-step") == "Practice 1 of 10 · not paid"
        fits(page)
        shot(page, "phone", "onboarding-practice-item")
        page.tap("#field-help summary")
        assert "No need to type RM" in page.inner_text("#field-help")
        fits(page)
        shot(page, "phone", "onboarding-practice-help")

        # One wrong answer: the feedback says what the snippet says, and the tip.
        answer_item(page, wrong=True)
        assert page.inner_text("#verdict") == "Not quite."
        assert page.inner_text("#explain") == "The snippet says “54.50”, you typed “RM 5450”."
        assert "No need to type RM" in page.inner_text("#tip")
        fits(page)
        shot(page, "phone", "onboarding-feedback-wrong")
        page.goto(f"{server.url}/review")  # started: back to the round, not the intro
        assert page.url.endswith("/practice")
        answer_item(page)
        assert page.inner_text("#verdict") == "Right!"
        fits(page)
        shot(page, "phone", "onboarding-feedback-right")
        for _ in range(8):
            with page.expect_navigation():
                page.tap("#next")
            answer_item(page)
            assert page.inner_text("#verdict") == "Right!"
        assert page.inner_text("#next") == "See your result"
        with page.expect_navigation():
            page.tap("#next")
        assert page.inner_text("#verdict") == "You passed the practice round"
        assert "9 of 10 right" in page.inner_text("#result")
        fits(page)
        shot(page, "phone", "onboarding-passed")
        with page.expect_navigation():
            page.tap("#start-work")
        page.wait_for_selector("#value")
        assert page.inner_text("#rate") == "This task pays 5 sen"
        page.tap("#field-help summary")
        assert "capitals as printed" in page.inner_text("#field-help")
        fits(page)
        shot(page, "phone", "onboarding-review-help")

        # The introduction in Bahasa Malaysia.
        page.goto(f"{server.url}/welcome/3")
        with page.expect_navigation():
            page.tap("#menu summary")  # the language is in the worker's menu
            page.tap("#lang-ms")
        assert page.inner_text("#welcome-step") == "Langkah 3 daripada 4"
        assert "Tidak boleh dibaca" in page.inner_text("#welcome")
        fits(page)
        shot(page, "phone", "onboarding-welcome-3-ms")
        context.clear_cookies()

        # A worker whose round failed is told so, and may try again.
        rahim = person_by_code(stores.db, failing).id
        for item in round_items(settings.crowd):
            answer_practice(stores.db, rahim, 1, item.id, "value", "54.50", settings.crowd)
        sign_in_with_access_code(page, server.url, failing)
        page.goto(f"{server.url}/review")
        assert page.url.endswith("/practice")
        assert page.inner_text("#verdict") == "Not passed yet"
        assert "1 of 10 right; 8 are needed" in page.inner_text("#result")
        fits(page)
        shot(page, "phone", "onboarding-failed")
        with page.expect_navigation():
            page.tap("#try-again")
        assert page.inner_text("#practice-step") == "Practice 1 of 10 · not paid"
        assert page.get_attribute("input[name=round]", "value") == "2"
    finally:
        context.close()
        server.stop()
