"""The review page in a real browser: Playwright driving Debian's Chromium on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import select

from kerani.settings import Settings
from kerani.webserver import BackgroundServer, free_port
from microtasks.workers import add_person
from review_ui.app import create_app
from storage import schema
from storage.stores import Stores
from tests.factories import seed_page

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


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


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_worker_corrects_snippets_in_a_phone_browser(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    seed_page(stores, [("postcode", "postcode", "4O100", 99.0), ("city", "text", "SHAH", 40.0)])
    code = add_person(stores.db, "ana", "worker")
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        page = browser.new_page(viewport={"width": 360, "height": 640})
        page.goto(f"{server.url}/review")
        assert page.url.endswith("/signin")
        page.fill("#code", code)
        page.click("button[type=submit]")
        page.wait_for_selector("#value")
        assert page.input_value("#value") == "4O100"  # the OCR guess, pre-filled
        # The snippet image really loaded (a broken image has naturalWidth 0).
        assert page.eval_on_selector("img.snippet", "img => img.naturalWidth") > 0
        page.screenshot(path=str(ARTIFACTS / "review-phone.png"))
        # The guess is selected, so typing replaces it; Enter submits.
        page.keyboard.type("40100")
        page.keyboard.press("Enter")
        page.wait_for_selector("h1:has-text('Town')")
        assert page.input_value("#value") == "SHAH"
        page.fill("#value", "SHAH ALAM")
        page.click("button[value=value]")
        page.wait_for_selector("text=No tasks right now")
        page.screenshot(path=str(ARTIFACTS / "review-done-phone.png"))
    finally:
        server.stop()
    with stores.db.connect() as conn:
        answers = (
            conn.execute(select(schema.answers.c.value).order_by(schema.answers.c.id))
            .scalars()
            .all()
        )
    assert answers == ["40100", "SHAH ALAM"]
