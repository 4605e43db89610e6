"""The agency's upload page in a real browser (Playwright, Debian's Chromium): name a batch,
pick its template, add files and a folder, send them (a big one in chunks, its line cut
once on the way), then the batch's page, its progress and its downloads. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Route
from sqlalchemy import func, select

from kerani.core.settings import ApiSettings, Settings
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import png
from tests.test_review_browser import VIEWPORTS, browser, shot, sign_in_with_access_code

pytestmark = pytest.mark.slow
__all__ = ["browser"]  # the module's Chromium, shared with the review pages' tests


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_agency_sends_files_and_a_folder_and_gets_its_batch(
    browser: Browser, settings: Settings, stores: Stores, tmp_path: Path, prefect_server: None
) -> None:
    generate_dataset(load_template("bantuan_form"), tmp_path / "forms", count=2, seed=21)
    pages = sorted((tmp_path / "forms" / "pages").iterdir())
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "form_b.png").write_bytes(pages[1].read_bytes())
    (folder / "tiny.png").write_bytes(png())  # refused when read: too small to be a page
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # a hidden file: left out
    # Chunks of 256 KiB: the 1 MB form goes in pieces, through the resumable path.
    settings = settings.model_copy(update={"api": ApiSettings(chunk_max_bytes=256 * 1024)})
    code = add_person(stores.db, "jkm", "agency")
    app = create_app(settings, stores)
    server = BackgroundServer(app, "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS["desktop"])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    cut: list[str] = []

    def lose_the_line_once(route: Route) -> None:
        # The third chunk never arrives: the page must ask where it stands and go on.
        if (
            route.request.method == "PATCH"
            and route.request.headers.get("upload-offset") == str(2 * 256 * 1024)
            and not cut
        ):
            cut.append(route.request.url)
            route.abort("internetdisconnected")
            return
        route.continue_()

    page.route("**/api/v1/uploads/chunks/*", lose_the_line_once)
    try:
        sign_in_with_access_code(page, server.url, code)
        page.click("text=Upload")
        page.wait_for_selector("#drop")
        page.fill("#batch-name", "Bantuan <b>Disember</b>")
        page.select_option("#batch-template", "bantuan_form")
        page.set_input_files("#pick-files", str(pages[0]))
        page.set_input_files("#pick-folder", str(folder))
        names = page.locator("#files tbody tr td:first-child").all_inner_texts()
        assert sorted(names) == ["form_001.png", "scans/form_b.png", "scans/tiny.png"]
        shot(page, "desktop", "upload-files")
        page.click("#send")
        page.wait_for_url("**/batches/*/report", timeout=120_000)
        assert cut, "the line was never cut: the chunked path was not taken"
        batch_id = page.url.rsplit("/", 2)[-2]
        b, p = schema.batches, schema.pages
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with stores.db.connect() as conn:
                batch = conn.execute(select(b).where(b.c.id == batch_id)).one()
                read = conn.execute(
                    select(func.count()).select_from(p).where(p.c.batch_id == batch_id)
                ).scalar_one()
            if batch.status == "ingested" and read == 2:
                break
            time.sleep(0.5)
        assert (batch.name, batch.status, read) == ("Bantuan <b>Disember</b>", "ingested", 2)
        # Each upload stored once, the chunked one whole.
        u = schema.uploads
        with stores.db.connect() as conn:
            uploads = conn.execute(select(u.c.filename, u.c.size, u.c.received)).all()
        assert sorted(x.filename for x in uploads) == [
            "form_001.png",
            "scans/form_b.png",
            "scans/tiny.png",
        ]
        assert all(x.size == x.received for x in uploads)
        page.reload()
        assert "scans/tiny.png" in page.content()  # refused, by name, with its reason
        shot(page, "desktop", "upload-report")
        page.click("#downloads-link")
        page.wait_for_selector("#downloads")
        listed = page.locator("#downloads a").all_inner_texts()
        assert "records.csv" in listed and "dictionary.json" in listed
        shot(page, "desktop", "upload-downloads")
        with page.expect_download() as got:
            page.click("#downloads a:text-is('records.csv')")
        csv = Path(got.value.path()).read_text()
        assert "form_001.png" in csv and "scans/form_b.png" in csv
        # The same page on a phone: nothing wider than the screen.
        phone = browser.new_context(**VIEWPORTS["phone"]).new_page()
        sign_in_with_access_code(phone, server.url, code)
        phone.goto(f"{server.url}/upload")
        width = phone.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 360, f"the upload page is {width} px wide on a 360 px phone"
        shot(phone, "phone", "upload")
        assert errors == []
    finally:
        # The batch's flow runs in a thread of the app: let it end before the database goes.
        assert app.state.retries.wait_idle(180)
        context.close()
        server.stop()
