"""The template designer in a real browser (Playwright, Debian's Chromium, desktop and
phone): upload sample forms, accept the fields proposed from their printed labels, draw and
nudge a box, dry-run the template on the samples, save it, then digitise a batch with the
saved version and get its records. Screenshots go to test-artifacts/."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page
from sqlalchemy import func, select

from kerani.core.settings import CrowdSettings, Settings, using_settings
from kerani.evaluation.crowd_sim import Profile, SimulatedWorker, run_crowd, truth_by_task
from kerani.evaluation.synthetic import generate_dataset
from kerani.flows.digitise import finish_batch, submit_batch
from kerani.forms.catalogue import stored_template
from kerani.forms.templates import load_template
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.test_review_browser import VIEWPORTS as REVIEW_VIEWPORTS
from tests.test_review_browser import browser
from tests.test_review_browser import shot as review_shot

pytestmark = pytest.mark.slow
VIEWPORTS = {**REVIEW_VIEWPORTS, "desktop": {"viewport": {"width": 1280, "height": 900}}}
__all__ = ["browser"]  # the module's Chromium, shared with the review pages' tests


def shot(page: Page, device: str, screen: str) -> None:
    review_shot(page, device, f"designer-{screen}")


def upload(page: Page, path: Path) -> None:
    count = page.locator("#samples li").count()
    page.set_input_files("#sample-file", str(path))
    page.click("#upload-button")
    page.wait_for_function(
        "n => document.querySelectorAll('#samples li').length > n", arg=count, timeout=60_000
    )


def touch_drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A finger drag, as Chromium's touch input sends it (pointer events of type touch)."""
    cdp = page.context.new_cdp_session(page)
    points = [start, ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2), end]
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1]}]},
    )
    for x, y in points[1:]:
        cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]}
        )
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def drag(page: Page, device: str, start: tuple[float, float], end: tuple[float, float]) -> None:
    if device == "phone":
        touch_drag(page, start, end)
        return
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
    page.mouse.move(*end, steps=4)
    page.mouse.up()


def on_stage(page: Page, x: float, y: float) -> tuple[float, float]:
    """Screen point of sample pixel (x, y), scrolled into view."""
    zoom = page.evaluate(
        "() => document.getElementById('stage').getBoundingClientRect().width / "
        "document.getElementById('sample').naturalWidth"
    )
    page.evaluate(
        "([x, y]) => { const v = document.getElementById('viewport');"
        " v.scrollTo(Math.max(0, x - 100), Math.max(0, y - 100)); "
        "document.getElementById('stage').scrollIntoView({block: 'nearest'}); }",
        [x * zoom, y * zoom],
    )
    box = page.locator("#stage").bounding_box()
    assert box is not None
    return box["x"] + x * zoom, box["y"] + y * zoom


@pytest.mark.parametrize("device", ["desktop", "phone"])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_design_a_template_on_samples_then_digitise_with_it(
    browser: Browser,
    settings: Settings,
    stores: Stores,
    tmp_path: Path,
    prefect_server: None,
    device: str,
) -> None:
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=3, seed=12)
    pages = sorted((forms / "pages").iterdir())
    truth = {
        Path(p["page"]).name: {f["name"]: f["text"] for f in p["fields"]}
        for p in map(json.loads, (forms / "truth.jsonl").read_text().splitlines())
    }
    code = add_person(stores.db, "jkm", "agency")
    server = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    context = browser.new_context(**VIEWPORTS[device])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # (The console also logs the refused save's 400, which the page shows as it should.)
    name = f"jkm_bantuan_{device}"
    try:
        page.goto(f"{server.url}/signin")
        page.click("summary")
        page.fill("#code", code)
        page.click("form[action='/signin/code'] button")
        page.click("text=Templates")
        page.click("#new-template")
        upload(page, pages[0])
        page.wait_for_selector("#proposals li")
        shot(page, device, "proposals")
        proposals = page.locator("#proposals li").all_inner_texts()
        assert any("Nama penuh / Full name → full_name (text)" in p for p in proposals)
        assert any("→ ic_number (ic_number)" in p for p in proposals)
        assert any("→ date_of_birth (date)" in p for p in proposals)
        # Accept the printed labels' proposals, one by hand and the rest at once; the
        # signature line is printed above its label, so that proposal is not taken.
        page.locator("#proposals li", has_text="full_name").locator("button").click()
        assert page.locator("#overlay .box").count() == 1
        page.locator("#proposals li", has_text="signature").locator("button").click()
        page.click("#f-remove")
        page.click("#accept-all")
        accepted = page.locator("#field-list li").count()
        assert accepted >= 9 and page.locator("#overlay .anchor").count() >= 10

        # Nudge the selected box with the keyboard (a desktop's) or its coordinates.
        page.locator("#field-list li", has_text="postcode").locator("button").click()
        x0 = int(page.input_value("#f-x0"))
        if device == "desktop":
            page.locator("#overlay .box.selected").click()
            page.keyboard.press("ArrowRight")
            page.keyboard.press("Shift+ArrowRight")
            assert int(page.input_value("#f-x0")) == x0 + 11
        # Draw one more field by dragging (a finger on the phone) across the declaration.
        page.click("#draw-mode")
        drag(page, device, on_stage(page, 90, 1185), on_stage(page, 1150, 1240))
        assert page.locator("#field-list li").count() == accepted + 1
        page.fill("#f-name", "declaration")
        page.fill("#f-label-en", "Declaration")
        page.fill("#f-label-ms", "Pengakuan")
        page.uncheck("#f-required")
        page.click("#draw-mode")
        # Resize it with its handle: its bottom edge moves down.
        y1 = int(page.input_value("#f-y1"))
        page.locator("#overlay .box.selected .handle").scroll_into_view_if_needed()
        handle = page.locator("#overlay .box.selected .handle").bounding_box()
        assert handle is not None
        hx, hy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
        drag(page, device, (hx, hy), (hx, hy + 20))
        assert int(page.input_value("#f-y1")) > y1

        upload(page, pages[1])
        page.fill("#tpl-name", name)
        page.fill("#tpl-title-en", "Household assistance (JKM)")
        page.fill("#tpl-title-ms", "Bantuan isi rumah (JKM)")

        # An impossible rule is refused, naming the field and the rule.
        page.locator("#field-list li", has_text="date_of_birth").locator("button").click()
        page.fill("#f-pattern", r"\d{4}-\d{2}-\d{2}")
        page.click("#save")
        page.wait_for_selector("#message:not([hidden])")
        refused = page.inner_text("#message")
        assert f"template '{name}': field 'date_of_birth': rule pattern" in refused
        page.fill("#f-pattern", "")

        page.click("#dry-run")
        page.wait_for_selector("#trial[data-done='1']", timeout=120_000)
        shot(page, device, "dry-run")
        assert page.locator("#trial .trial-sample").count() == 2
        row = page.locator("#trial .trial-sample").first.locator("tr[data-field='postcode']")
        assert truth[pages[0].name]["postcode"] in row.inner_text()
        assert row.locator("img").evaluate("i => i.complete && i.naturalWidth > 0")
        verdicts = page.locator("#trial .verdict").all_inner_texts()
        assert sum(v == "passes" for v in verdicts) >= len(verdicts) // 2
        # A new template has no calibration: every field goes to people.
        assert all(r.startswith("to people") for r in page.locator(".routing").all_inner_texts())

        page.click("#save")
        page.wait_for_selector("#status:not([hidden])")
        assert f"Saved as {name}:1" in page.inner_text("#status")
        shot(page, device, "saved")
        assert not errors, errors
    finally:
        context.close()
        server.stop()

    saved = stored_template(stores.db, name)
    assert saved.template.anchors and saved.template.page_size == (1240, 1754)
    assert saved.template.has_field("declaration") and not saved.template.has_field("signature")

    # The saved version digitises a batch: simulated careful workers settle its fields.
    with using_settings(settings):
        report = submit_batch([str(pages[2])], name)
    assert report["template"] == f"{name}:1" and report["ocr"] == {"ocred": 1}
    f, p = schema.fields, schema.pages
    with stores.db.connect() as conn:
        fields = conn.execute(
            select(f.c.id, f.c.name)
            .join(p, p.c.id == f.c.page_id)
            .where(p.c.batch_id == report["batch_id"])
        ).all()
    # The declaration has no true text in the dataset: the workers see it blank.
    mapping = {int(r.id): truth[pages[2].name].get(r.name) for r in fields}
    crowd = CrowdSettings(max_fields_per_document=1000, gold_every=0)
    workers = [
        SimulatedWorker(
            n, add_person(stores.db, n, "worker", proven=True, practised=True), Profile("careful")
        )
        for n in ("a", "b", "c")
    ]
    with stores.db.begin() as conn:
        conn.execute(schema.workers.update().values(cleared=True))
    app_settings = settings.model_copy(update={"crowd": crowd})
    with TestClient(create_app(app_settings, stores)) as client:
        run_crowd(client, workers, truth_by_task(stores.db, mapping))
    with using_settings(settings):
        finish_batch(report["batch_id"])
    with stores.db.connect() as conn:
        records = conn.execute(select(func.count()).select_from(schema.records)).scalar_one()
    assert records == 1
    csv = stores.blobs.get(f"exports/{report['batch_id']}/records.csv")
    frame = pd.read_csv(io.BytesIO(csv), dtype=str, keep_default_na=False)
    expected = truth[pages[2].name]
    assert frame.loc[0, "postcode"] == expected["postcode"]
    assert frame.loc[0, "full_name"] == expected["full_name"]
