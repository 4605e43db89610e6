"""The operator's console in Chromium: the crowd's figures, a worker paused from the list, a
masked answer that stays out of the page source until asked for, and no console for others.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser
from sqlalchemy import select, update

from kerani.core.settings import Settings
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_next
from kerani.people.workers import add_person, person_by_code
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_review_browser import VIEWPORTS, browser, shot, sign_in_with_access_code

__all__ = ["browser"]  # the module's Chromium, shared with the review pages' tests

GUESSES = [("city", "text", "SHAH ALAM", 40.0), ("postcode", "postcode", "4O100", 99.0)]
NAME = "<b>ana</b>"  # a name an operator typed: shown as text, never as markup
SECRET = "Q7SECRETCITY"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_an_operator_watches_the_crowd_pauses_a_worker_and_reveals_one_value(
    browser: Browser, settings: Settings, stores: Stores, device: str
) -> None:
    seed_page(stores, GUESSES)
    f = schema.fields
    with stores.db.begin() as conn:
        conn.execute(update(f).where(f.c.name == "postcode").values(sensitivity="public"))
    code = add_person(stores.db, NAME, "worker", proven=True, practised=True)
    ana = person_by_code(stores.db, code).id
    while (task := claim_next(stores.db, ana, settings.crowd)) is not None:
        typed = SECRET if task.field_name == "city" else "40100"
        submit_answer(stores.db, task.task_id, ana, "value", typed, task.task_id, settings.crowd)
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS[device])
    try:
        page = context.new_page()
        sign_in_with_access_code(page, server.url, add_person(stores.db, "olivia", "operator"))
        page.goto(f"{server.url}/operator/crowd")
        assert page.locator("#crowd-pace").is_visible()
        assert "1" in page.locator("#crowd-pace tr").first.inner_text()  # one active worker
        shot(page, device, "operator-crowd")

        page.goto(f"{server.url}/operator/workers")
        row = page.locator(f"#worker-{ana}")
        assert NAME in row.inner_text()  # the markup as text
        assert page.locator(f"#worker-{ana} b").count() == 0
        row.locator("button[value=pause]").click()
        assert f"{NAME}: paused" in page.locator("#done").inner_text()
        assert "paused" in page.locator(f"#worker-{ana}").inner_text()
        shot(page, device, "operator-workers")
        with stores.db.connect() as conn:
            w = schema.workers
            assert conn.execute(select(w.c.quarantined).where(w.c.id == ana)).scalar_one()

        page.goto(f"{server.url}/status")
        assert SECRET not in page.content()  # masked: not in the page source at all
        assert "40100" in page.content()  # the public answer is shown
        page.locator("form.reveal button").first.click()
        assert SECRET in page.locator("#revealed").inner_text()
        shot(page, device, "operator-revealed")

        # A worker's browser gets no console.
        other = browser.new_context(**VIEWPORTS[device])
        worker_page = other.new_page()
        sign_in_with_access_code(
            worker_page, server.url, add_person(stores.db, "ben", "worker", practised=True)
        )
        response = worker_page.goto(f"{server.url}/operator/workers")
        assert response is not None and response.status == 403
        other.close()
    finally:
        context.close()
        server.stop()
