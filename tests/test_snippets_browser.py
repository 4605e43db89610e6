"""Snippets and controls on a 360x640 touch phone: the text of real receipt lines drawn at
least 24 CSS px high (measured from the rendered page), a tap zooms, every control at least
44x44, a one-line header with a menu, column mode a screenful of rows at a time with big
Unreadable toggles. Screenshots under test-artifacts/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page
from sqlalchemy import func, select, update

from kerani.benchmarks.phone_measures import smallest_target, snippet_text_px, touch_targets
from kerani.core.settings import Settings
from kerani.ocr.snippets import crop_snippet
from kerani.people.workers import invite_worker
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_review_browser import PIN, VIEWPORTS, browser, shot

__all__ = ["browser"]  # the module's Chromium, shared from the review page's tests

RECEIPTS = Path(__file__).resolve().parents[1] / "kerani" / "samples" / "receipts"


def _receipt_lines(count: int) -> list[tuple[str, bytes]]:
    """The first page's lines (truth text, snippet as the pre-OCR stage cuts it), the longest
    line among them."""
    truth = json.loads((RECEIPTS / "truth.jsonl").read_text().splitlines()[0])
    image = Image.open(RECEIPTS / truth["page"]).convert("RGB")
    fields = sorted(truth["fields"], key=lambda f: -len(f["text"]))[:1] + truth["fields"][:count]
    return [(f["text"], crop_snippet(image, tuple(f["box"]), 6)) for f in fields[:count]]


def _seed(stores: Stores, count: int) -> list[str]:
    """A receipt page whose `count` line fields carry real snippets; returns their texts."""
    lines = _receipt_lines(count)
    page_id = seed_page(
        stores,
        [(f"line_{i:03d}", "line", text, 40.0) for i, (text, _) in enumerate(lines)],
        template="receipt",
    )
    for i, (_text, snippet) in enumerate(lines):
        stores.blobs.put(f"snippets/{page_id}/line_{i:03d}.png", snippet)
    return [text for text, _ in lines]


def _worker_signed_in(stores: Stores, page: Page, url: str) -> None:
    _number, invite = invite_worker(stores.db, "siti", 14)
    page.goto(f"{url}/signin")
    _no_small_controls(page)
    page.goto(f"{url}/join")
    _no_small_controls(page)
    page.fill("#invite", invite)
    page.fill("#pin", PIN)
    page.fill("#pin_again", PIN)
    with stores.db.begin() as conn:
        conn.execute(update(schema.workers).values(practice_passed_at=utcnow()))
    page.tap("button.primary")
    page.wait_for_selector("#worker-number")


def _no_small_controls(page: Page) -> float:
    small = [t for t in touch_targets(page) if t.size < 44]
    assert not small, f"controls under 44 CSS px on {page.url}: {small}"
    smallest = smallest_target(page)
    assert smallest is not None
    return smallest.size


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_receipt_lines_are_legible_and_every_control_is_a_finger_wide(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    texts = _seed(stores, 8)
    settings.crowd.gold_every = 0
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS["phone"])
    page = context.new_page()
    try:
        _worker_signed_in(stores, page, server.url)
        _no_small_controls(page)
        shot(page, "phone", "snippets-my-work")
        page.goto(f"{server.url}/review")
        page.wait_for_selector("#value")
        # One line of header, its menu 44 px tall links.
        assert page.locator("header").bounding_box()["height"] <= 52  # type: ignore[index]
        _no_small_controls(page)
        heights = {}
        for n in range(len(texts)):
            page.wait_for_function("() => document.getElementById('snippet').complete")
            shown = page.input_value("#value")
            heights[shown] = snippet_text_px(page)
            if n == 0:
                shot(page, "phone", "snippets-review")
            if shown == max(texts, key=len):
                shot(page, "phone", "snippets-review-long-line")
                before = page.locator("#snippet").bounding_box()["width"]  # type: ignore[index]
                page.tap("button.zoom")
                assert page.get_attribute("button.zoom", "aria-pressed") == "true"
                zoomed = page.locator("#snippet").bounding_box()["width"]  # type: ignore[index]
                assert zoomed >= 1.9 * before
                shot(page, "phone", "snippets-zoomed")
                page.tap("button.zoom")
            page.tap("#submit")
            if n < len(texts) - 1:
                page.wait_for_function(
                    "v => document.getElementById('value').value !== v", arg=shown
                )
        assert max(texts, key=len) in heights  # the longest line was among them
        assert all(h is not None and h >= 24 for h in heights.values()), heights
        page.goto(f"{server.url}/review")
        page.tap("#menu summary")
        page.wait_for_selector("#menu nav a[href='/me']", state="visible")
        _no_small_controls(page)
        shot(page, "phone", "snippets-menu")
        page.goto(f"{server.url}/me/pin")
        _no_small_controls(page)
        page.goto(f"{server.url}/me")
        page.tap("#statements a")
        page.wait_for_selector("#statement")
        _no_small_controls(page)
        shot(page, "phone", "snippets-statement")
    finally:
        context.close()
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_column_mode_pages_a_screenful_of_rows_with_big_unreadable_toggles(
    browser: Browser, settings: Settings, stores: Stores
) -> None:
    texts = _seed(stores, 9)
    settings.crowd.gold_every = 0
    settings.review.column_size = 9
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS["phone"])
    page = context.new_page()
    try:
        _worker_signed_in(stores, page, server.url)
        page.goto(f"{server.url}/column")
        page.wait_for_selector("#rows-next")
        shown = page.locator("#column .row:visible").count()
        assert 1 <= shown < len(texts)
        # The screenful and its Next button fit the phone's screen: no scrolling for them.
        assert page.locator("#rows-next").bounding_box()["y"] + 44 <= 640  # type: ignore[index]
        assert page.locator("#submit-column").is_hidden()  # every row is seen before Submit
        min_text = min(snippet_text_px(page, f"#row-{i} .snippet") or 0 for i in range(shown))
        assert min_text >= 24
        _no_small_controls(page)
        page.tap("#row-0 label.cant")
        assert page.is_checked("#row-0 input[name=unreadable]")
        shot(page, "phone", "snippets-column-first-rows")
        pages = 1
        while page.locator("#rows-next").is_visible():
            page.tap("#rows-next")
            pages += 1
            _no_small_controls(page)
        assert pages >= 3
        shot(page, "phone", "snippets-column-last-rows")
        with page.expect_navigation():
            page.tap("#submit-column")
        with stores.db.connect() as conn:
            kinds = dict(
                conn.execute(
                    select(schema.answers.c.kind, func.count()).group_by(schema.answers.c.kind)
                )
                .tuples()
                .all()
            )
        assert kinds.get("unreadable") == 1 and sum(kinds.values()) == len(texts)
    finally:
        context.close()
        server.stop()
