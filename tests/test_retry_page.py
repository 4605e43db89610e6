"""The agency page names each page that could not be read, with its reason, and its Retry
button reads those pages again (with another template version if picked); only the batch's
own agency or an operator may press it."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from kerani.core.settings import Settings
from kerani.core.vocabulary import PageStatus
from kerani.forms.catalogue import stored_template
from kerani.people.workers import add_person, agency_named
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import batch_of, ingested_page, sign_in_with_code

pytestmark = pytest.mark.slow
REASON = "does not look like the form 'bantuan_form': alignment failed"


def failed_receipt(stores: Stores, sroie_dir: Path, agency: str) -> tuple[int, str]:
    """A receipt submitted by `agency` with the form template, whose page failed; page, batch."""
    form = stored_template(stores.db, "bantuan_form")
    page_id = ingested_page(stores, Image.open(sroie_dir / "img" / "000.jpg"), "bantuan_form")
    batch = batch_of(stores, page_id)
    owner = agency_named(stores.db, agency)
    with stores.db.begin() as conn:
        conn.execute(
            schema.pages.update()
            .where(schema.pages.c.id == page_id)
            .values(status=PageStatus.OCR_FAILED, error=REASON, template_id=form.id)
        )
        conn.execute(
            schema.batches.update()
            .where(schema.batches.c.id == batch)
            .values(agency_id=owner, template_id=form.id)
        )
    return page_id, batch


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_retry_button_reads_the_failed_page_again_with_the_version_picked(
    settings: Settings, stores: Stores, sroie_dir: Path, prefect_server: None
) -> None:
    codes = {name: add_person(stores.db, name, "agency") for name in ("jkm", "lhdn")}
    page_id, batch = failed_receipt(stores, sroie_dir, "jkm")
    receipt = stored_template(stores.db, "receipt")
    app = create_app(settings, stores)

    other = TestClient(app, follow_redirects=False)
    sign_in_with_code(other, codes["lhdn"])
    theirs = other.get("/status")
    assert batch[:12] not in theirs.text and "Read the failed pages again" not in theirs.text
    # Another agency's batch answers as a batch that does not exist.
    foreign = other.post(f"/batches/{batch}/retry", data={"csrf": csrf_of(theirs.text)})
    unknown = other.post(f"/batches/{'0' * 32}/retry", data={"csrf": csrf_of(theirs.text)})
    assert foreign.status_code == unknown.status_code == 404

    ours = TestClient(app, follow_redirects=False)
    sign_in_with_code(ours, codes["jkm"])
    page = ours.get("/status")
    assert f"Not read: scan.png page 1: {REASON}" in html.unescape(page.text)
    assert 'option value="receipt:1"' in page.text
    assert ours.post(f"/batches/{batch}/retry", data={"template": "receipt:1"}).status_code == 422
    refused = ours.post(
        f"/batches/{batch}/retry", data={"csrf": csrf_of(page.text), "template": "nope:3"}
    )
    assert refused.status_code == 400 and "no template" in refused.text
    started = ours.post(
        f"/batches/{batch}/retry", data={"csrf": csrf_of(page.text), "template": "receipt:1"}
    )
    assert started.status_code == 303
    assert started.headers["location"] == f"/status?retry_started={batch[:12]}"
    assert "being read again" in ours.get(started.headers["location"]).text

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with stores.db.connect() as conn:
            row = conn.execute(select(schema.pages).where(schema.pages.c.id == page_id)).one()
        if row.status not in (PageStatus.OCR_FAILED, PageStatus.INGESTED, PageStatus.OCRED):
            break
        time.sleep(1)
    assert row.status in (PageStatus.ROUTED, PageStatus.COMPLETE), row.error
    assert (row.template, row.template_id, row.error) == ("receipt", receipt.id, None)
    with stores.db.connect() as conn:
        lines = conn.execute(
            select(func.count())
            .select_from(schema.fields)
            .where(schema.fields.c.page_id == page_id)
        ).scalar_one()
    assert lines >= 10
    assert "Not read:" not in ours.get("/status").text
