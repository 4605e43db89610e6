"""Account care in a real browser on a 360x640 touch phone: a worker changes their PIN; an
operator resets a forgotten one, the old PIN and session stop working, and the worker joins
with the one-time code, chooses a new PIN and signs in. Screenshots in test-artifacts/."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page

from kerani.core.settings import Settings
from kerani.microtasks.practice import mark_practice_passed
from kerani.people.workers import add_person, invite_worker, join_with_invite
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage.stores import Stores
from tests.test_review_browser import VIEWPORTS, browser, shot, sign_in_with_access_code

__all__ = ["browser"]  # the module's Chromium, shared with the review page's tests

PHONE = VIEWPORTS["phone"]
PIN, CHANGED, AFTER_RESET = "402917", "739164", "581620"


def small_controls(page: Page) -> list[str]:
    """Buttons, inputs and links of the main part smaller than 44x44 CSS px."""
    found: list[str] = page.eval_on_selector_all(
        "main button, main input:not([type=hidden]), main a.button, main select",
        """els => els.filter(e => e.offsetParent !== null).map(e => {
            const r = e.getBoundingClientRect();
            return [e.id || e.name || e.textContent.trim(), r.width, r.height];
        }).filter(([, w, h]) => w < 44 || h < 44).map(([n, w, h]) => `${n}: ${w}x${h}`)""",
    )
    return found


def sign_in(page: Page, url: str, number: int, pin: str) -> None:
    page.goto(f"{url}/signin")
    page.fill("#number", str(number))
    page.fill("#pin", pin)
    with page.expect_navigation():
        page.tap("button.primary")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_pin_change_and_operator_reset_on_a_phone(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    number, invite = invite_worker(stores.db, "aminah", 14)
    join_with_invite(stores.db, invite, PIN, PIN)
    mark_practice_passed(stores.db, number)  # a worker at work, past practice
    operator_code = add_person(stores.db, "ops", "operator")
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    worker = browser.new_context(**PHONE).new_page()
    operator = browser.new_context(**PHONE).new_page()
    try:
        # The worker changes their own PIN from "My work".
        sign_in(worker, server.url, number, PIN)
        worker.goto(f"{server.url}/me")
        worker.tap("#change-pin")
        worker.wait_for_selector("#current")
        assert small_controls(worker) == []
        shot(worker, "phone", "pin-change")
        worker.fill("#current", "111112")
        worker.fill("#pin", CHANGED)
        worker.fill("#pin_again", CHANGED)
        worker.tap("#pin-save")
        worker.wait_for_selector(".error")
        assert "not your current PIN" in worker.inner_text(".error")
        shot(worker, "phone", "pin-change-wrong")
        worker.fill("#current", PIN)
        worker.fill("#pin", CHANGED)
        worker.fill("#pin_again", CHANGED)
        worker.tap("#pin-save")
        worker.wait_for_selector("#pin-changed")
        assert small_controls(worker) == []
        shot(worker, "phone", "pin-changed")

        # They forget it: the operator resets it from the workers page.
        sign_in_with_access_code(operator, server.url, operator_code)
        operator.goto(f"{server.url}/operator/workers")
        operator.wait_for_selector(f"#reset-pin-{number}")
        shot(operator, "phone", "operator-workers-account")
        operator.set_viewport_size({"width": 1280, "height": 800})  # where operators work
        shot(operator, "desktop", "operator-workers-account")
        operator.set_viewport_size(PHONE["viewport"])
        operator.tap(f"#reset-pin-{number}")
        operator.wait_for_selector("#one-time-code")
        code = operator.inner_text("#one-time-code").strip()
        assert re.fullmatch(r"[A-HJ-NP-Z2-9]{4}-[A-HJ-NP-Z2-9]{4}", code)
        assert code not in operator.url and "Valid until" in operator.inner_text("main")
        box = operator.locator("#one-time-code").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 360  # the code fits the phone
        shot(operator, "phone", "operator-code")

        # The worker's session ended, and neither PIN signs in.
        worker.goto(f"{server.url}/me")
        assert worker.url.endswith("/signin")
        sign_in(worker, server.url, number, CHANGED)
        worker.wait_for_selector(".error")
        shot(worker, "phone", "signin-after-reset")
        # The code joins, with a new PIN, and that PIN signs in.
        worker.goto(f"{server.url}/join")
        worker.fill("#invite", code.lower().replace("-", " "))
        worker.fill("#pin", AFTER_RESET)
        worker.fill("#pin_again", AFTER_RESET)
        worker.tap("button.primary")
        worker.wait_for_selector("#worker-number")
        assert worker.inner_text("#worker-number") == str(number)
        worker.tap("#menu summary")
        with worker.expect_navigation():
            worker.tap("header button:has-text('Sign out')")
        sign_in(worker, server.url, number, AFTER_RESET)
        worker.wait_for_load_state()
        assert not worker.url.endswith("/signin")
        # The operator sets the worker's pages to Bahasa Malaysia.
        operator.goto(f"{server.url}/operator/workers")
        operator.select_option(f"#language-{number}", "ms")
        operator.tap(f"#language-{number} >> xpath=../../button")
        operator.wait_for_selector("#done")
        worker.goto(f"{server.url}/me/pin")
        assert "Tukar PIN anda" in worker.inner_text("h1")
        shot(worker, "phone", "pin-change-ms")
    finally:
        server.stop()
