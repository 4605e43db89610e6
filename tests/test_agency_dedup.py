"""Deduplication per agency: another agency's copy of a scan is never seen, a repeat within
one agency links to the page read first and still gets its record."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from sqlalchemy import select

from kerani.core.settings import Settings
from kerani.core.vocabulary import FieldStatus, PageStatus, ValueKind, ValueSource
from kerani.flows.documents import finish_ready_documents
from kerani.forms.catalogue import stored_template
from kerani.ingest.batches import IngestReport, ingest_paths
from kerani.microtasks.routing import route_page
from kerani.ocr.engine import Word
from kerani.people.workers import add_person, agency_named
from kerani.records.assembly import withdraw_record
from kerani.records.progress import batch_progress
from kerani.records.report import batch_report
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import read_with_words, sign_in_with_code

WORDS = [
    Word("KEDAI", (20, 20, 200, 60), 96.0, (1, 1, 1)),
    Word("TOTAL", (20, 100, 120, 140), 96.0, (1, 1, 2)),
    Word("12.50", (130, 100, 220, 140), 96.0, (1, 1, 2)),
]


def _scan(folder: Path, name: str, mark: str = "") -> Path:
    """A receipt-like image; `mark` makes its content (and so its hash) differ."""
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.new("L", (400, 300), 255)
    ImageDraw.Draw(image).text((20, 20), f"KEDAI {mark}", fill=0)
    path = folder / name
    image.save(path)
    return path


def _submit(stores: Stores, settings: Settings, paths: list[Path], agency: str) -> IngestReport:
    template = stored_template(stores.db, "receipt")
    return ingest_paths(
        stores.db, stores.blobs, paths, template, settings.ingest, agency_named(stores.db, agency)
    )


def _pages(stores: Stores, batch_id: str) -> list[tuple[int, str, int | None]]:
    p = schema.pages
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(p.c.id, p.c.status, p.c.duplicate_of)
            .where(p.c.batch_id == batch_id)
            .order_by(p.c.id)
        ).all()
    return [(int(r.id), str(r.status), r.duplicate_of) for r in rows]


def _read_and_settle(stores: Stores, page_id: int, value: str) -> None:
    """Read a page, route it, and settle each field as people would (value `value` for the
    first line); then build its record."""
    read_with_words(stores, page_id, WORDS)
    route_page(stores.db, page_id, 101.0)
    _settle(stores, page_id, value)
    finish_ready_documents(stores.db)


def _settle(stores: Stores, page_id: int, company: str) -> None:
    """Settle every field of a read page as people would, with values its rules take."""
    values = {"company": company, "date": "01/02/2024", "total": "12.50"}
    f = schema.fields
    with stores.db.begin() as conn:
        names = conn.execute(select(f.c.name).where(f.c.page_id == page_id))
        for name in list(names.scalars()):
            conn.execute(
                f.update()
                .where(f.c.page_id == page_id, f.c.name == name)
                .values(
                    status=FieldStatus.SETTLED,
                    value=values.get(name, "TOTAL 12.50"),
                    value_kind=ValueKind.TEXT,
                    source=ValueSource.HUMAN,
                    agreement=1.0,
                )
            )


def _record_values(stores: Stores, batch_id: str) -> list[str]:
    r = schema.records
    with stores.db.connect() as conn:
        return list(conn.execute(select(r.c.data).where(r.c.batch_id == batch_id)).scalars())


@pytest.fixture
def agencies(stores: Stores) -> dict[str, str]:
    """Two agency users and their access codes."""
    return {name: add_person(stores.db, name, "agency") for name in ("jkm", "lhdn")}


def test_the_same_scan_from_two_agencies_gives_each_its_own_page_and_record(
    stores: Stores, settings: Settings, agencies: dict[str, str], tmp_path: Path
) -> None:
    scan = _scan(tmp_path / "x", "resit.png")
    ours = _submit(stores, settings, [scan], "jkm")
    (page_x, status, _), *_ = _pages(stores, ours.batch_id)
    _read_and_settle(stores, page_x, "KEDAI JKM")
    # The other agency's copy: a page of its own, to be read, with nothing of jkm's.
    copy = tmp_path / "y" / "another-name.png"
    copy.parent.mkdir()
    copy.write_bytes(scan.read_bytes())
    theirs = _submit(stores, settings, [copy], "lhdn")
    assert (theirs.pages_created, theirs.pages_linked, theirs.pages_existing) == (1, 0, 0)
    ((page_y, status, link),) = _pages(stores, theirs.batch_id)
    assert (status, link) == (PageStatus.INGESTED, None)
    assert _record_values(stores, theirs.batch_id) == []
    _read_and_settle(stores, page_y, "KEDAI LHDN")
    (y_record,) = _record_values(stores, theirs.batch_id)
    assert "KEDAI LHDN" in y_record and "JKM" not in y_record
    (x_record,) = _record_values(stores, ours.batch_id)
    assert "KEDAI JKM" in x_record


def test_a_repeat_within_an_agency_links_and_gets_its_record(
    stores: Stores, settings: Settings, agencies: dict[str, str], tmp_path: Path
) -> None:
    scan = _scan(tmp_path / "first", "resit.png")
    first = _submit(stores, settings, [scan], "jkm")
    ((page_1, _, _),) = _pages(stores, first.batch_id)
    read_with_words(stores, page_1, WORDS)
    route_page(stores.db, page_1, 101.0)
    # Sent again with another file: a new batch, the repeat linked, not read twice.
    other = _scan(tmp_path / "first", "other.png", mark="2")
    second = _submit(stores, settings, [scan, other], "jkm")
    assert second.batch_id != first.batch_id
    assert (second.pages_created, second.pages_linked) == (1, 1)
    statuses = {link: status for _, status, link in _pages(stores, second.batch_id)}
    assert statuses == {page_1: PageStatus.DUPLICATE, None: PageStatus.INGESTED}
    # The first page's record, when people finish it, reaches the second batch too.
    assert _record_values(stores, second.batch_id) == []
    report = batch_report(stores.db, second.batch_id)
    assert (report.pages_linked, report.pages_complete, report.pages_waiting) == (1, 0, 2)
    _settle(stores, page_1, "KEDAI SATU")
    finish_ready_documents(stores.db, first.batch_id)
    (copied,) = _record_values(stores, second.batch_id)
    assert copied == _record_values(stores, first.batch_id)[0] and "KEDAI SATU" in copied
    (progress,) = batch_progress(stores.db, second.batch_id)
    assert (progress["pages_linked"], progress["pages_complete"]) == (1, 1)
    assert batch_report(stores.db, second.batch_id).pages_complete == 1
    # Sent back by a rule: the copies go with the record, and come back with it.
    withdraw_record(stores.db, page_1)
    assert _record_values(stores, second.batch_id) == []
    # A third batch after the record exists gets its copy at once.
    third = _submit(stores, settings, [scan, _scan(tmp_path / "t", "c.png", "3")], "jkm")
    assert third.pages_linked == 1
    finish_ready_documents(stores.db, first.batch_id)
    assert len(_record_values(stores, third.batch_id)) == 1
    assert len(_record_values(stores, second.batch_id)) == 1


def test_a_resubmission_after_a_crash_reads_the_pages_never_read(
    stores: Stores, settings: Settings, agencies: dict[str, str], tmp_path: Path
) -> None:
    scan = _scan(tmp_path / "s", "resit.png")
    crashed = _submit(stores, settings, [scan], "jkm")  # ingested, and never read
    again = _submit(stores, settings, [scan, _scan(tmp_path / "s", "b.png", "b")], "jkm")
    assert (again.pages_created, again.pages_linked) == (2, 0)
    assert {s for _, s, _ in _pages(stores, again.batch_id)} == {PageStatus.INGESTED}
    assert [s for _, s, _ in _pages(stores, crashed.batch_id)] == [PageStatus.INGESTED]


def test_another_agencys_batch_answers_exactly_as_an_unknown_one(
    stores: Stores, settings: Settings, agencies: dict[str, str], tmp_path: Path
) -> None:
    theirs = _submit(stores, settings, [_scan(tmp_path / "x", "a.png")], "lhdn").batch_id
    ours = _submit(stores, settings, [_scan(tmp_path / "y", "b.png", "y")], "jkm").batch_id
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    assert sign_in_with_code(client, agencies["jkm"]).status_code == 303
    free = next(c for c in "0123456789abcdef" if c not in (theirs[0], ours[0]))
    unknown = free * 32

    def answer(batch: str) -> tuple[int, str]:
        got = client.get(f"/batches/{batch}/report")
        # The body names the id asked for; the rest must be word for word the same.
        named = rf"(?<=['/;]){re.escape(batch)}(?=['/&])"
        return got.status_code, re.sub(named, "ID", got.text)

    assert answer(theirs)[0] == 404
    assert answer(theirs) == answer(unknown)
    # A one-character prefix of their id is as unknown as any other among ours.
    if ours[0] != theirs[0]:
        assert answer(theirs[0]) == answer(free)
    assert client.get(f"/batches/{ours[:6]}/report").status_code == 200
