"""Open batches of the agency API: file names, a file that comes as the batch starts, S3
prefixes scoped to the agency, and cancel letting linked pages go."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import select

from kerani.core.errors import BadInputError, ConflictError
from kerani.core.settings import ApiSettings, Settings
from kerani.core.vocabulary import PageStatus
from kerani.forms.catalogue import stored_template
from kerani.ingest.batches import ingest_paths
from kerani.ingest.cancel import cancel_batch
from kerani.ingest.intake import (
    add_file,
    append_chunk,
    batch_files,
    begin_intake,
    check_file_name,
    create_open_batch,
    set_s3_source,
    start_upload,
)
from kerani.microtasks.routing import route_page
from kerani.people.workers import add_person, agency_named
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import read_with_words
from tests.test_agency_dedup import WORDS, _scan


@pytest.mark.parametrize(
    "name",
    ["../up.png", "/etc/passwd", "a/../b.png", ".hidden/a.png", "a//b.png", "x" * 256 + ".png"],
)
def test_names_that_leave_the_batch_hide_or_cannot_be_stored_are_refused(name: str) -> None:
    with pytest.raises(BadInputError, match=r"^file name "):
        check_file_name(name)


def test_a_file_and_a_folder_of_the_same_name_clash(stores: Stores, settings: Settings) -> None:
    add_person(stores.db, "jkm", "agency")
    jkm = agency_named(stores.db, "jkm")
    batch = create_open_batch(stores.db, stored_template(stores.db, "receipt"), jkm, "b")
    staging = settings.core.data_dir / "uploads"
    add_file(stores.db, stores.blobs, batch, jkm, "a", io.BytesIO(b"x"), settings.ingest, staging)
    with pytest.raises(ConflictError, match="clashes with a"):
        add_file(
            stores.db,
            stores.blobs,
            batch,
            jkm,
            "a/b.png",
            io.BytesIO(b"y"),
            settings.ingest,
            staging,
        )
    with pytest.raises(ConflictError, match="clashes with a"):
        start_upload(stores.db, batch, jkm, "a/c.png", 5, settings.ingest)


def test_a_file_finished_after_the_start_is_refused_not_dropped(
    stores: Stores, settings: Settings
) -> None:
    add_person(stores.db, "jkm", "agency")
    jkm = agency_named(stores.db, "jkm")
    batch = create_open_batch(stores.db, stored_template(stores.db, "receipt"), jkm, "b")
    staging = settings.core.data_dir / "uploads"
    add_file(
        stores.db, stores.blobs, batch, jkm, "a.png", io.BytesIO(b"x"), settings.ingest, staging
    )
    up = start_upload(stores.db, batch, jkm, "late.png", 4, settings.ingest)
    append_chunk(stores.db, stores.blobs, up.id, jkm, 0, b"ab", staging)
    begin_intake(stores.db, batch, jkm)
    with pytest.raises(ConflictError, match="files can only be added before it is started"):
        append_chunk(stores.db, stores.blobs, up.id, jkm, 2, b"cd", staging)
    late = next(f for f in batch_files(stores.db, batch) if f["name"] == "late.png")
    assert (late["status"], late["received"]) == ("receiving", 2)  # said so when it is read


def test_an_s3_prefix_is_the_agencys_own_not_a_longer_name_that_begins_with_it(
    stores: Stores,
) -> None:
    api = ApiSettings(intake_s3_buckets="drop")
    receipt = stored_template(stores.db, "receipt")
    for name in ("JPN", "JPN/Selangor"):
        add_person(stores.db, name, "agency")
    jpn, selangor = agency_named(stores.db, "JPN"), agency_named(stores.db, "JPN/Selangor")
    mine = create_open_batch(stores.db, receipt, jpn, "mine")
    theirs = create_open_batch(stores.db, receipt, selangor, "theirs")
    with pytest.raises(BadInputError, match=r"must be under JPN/"):
        set_s3_source(stores.db, mine, jpn, "s3://drop/JPN/Selangor/2026/", api)
    assert set_s3_source(stores.db, mine, jpn, "s3://drop/JPN/2026/", api) == "s3://drop/JPN/2026/"
    set_s3_source(stores.db, theirs, selangor, "s3://drop/JPN/Selangor/2026/", api)
    with pytest.raises(BadInputError, match="not one Kerani reads from"):
        set_s3_source(stores.db, mine, jpn, "s3://other/JPN/", api)


def test_cancelling_a_batch_lets_the_pages_linked_to_it_be_read_in_their_own(
    stores: Stores, settings: Settings, tmp_path: Path
) -> None:
    add_person(stores.db, "jkm", "agency")
    jkm = agency_named(stores.db, "jkm")
    receipt = stored_template(stores.db, "receipt")
    scan = _scan(tmp_path / "a", "r.png")
    first = ingest_paths(stores.db, stores.blobs, [scan], receipt, settings.ingest, jkm)
    p = schema.pages
    with stores.db.connect() as conn:
        page = conn.execute(select(p.c.id).where(p.c.batch_id == first.batch_id)).scalar_one()
    read_with_words(stores, page, WORDS)
    route_page(stores.db, page, 101.0)
    other = _scan(tmp_path / "a", "s.png", "2")
    second = ingest_paths(stores.db, stores.blobs, [scan, other], receipt, settings.ingest, jkm)
    assert second.pages_linked == 1
    assert cancel_batch(stores.db, first.batch_id) > 0
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(p.c.status, p.c.duplicate_of).where(p.c.batch_id == second.batch_id)
        ).all()
    assert {(r.status, r.duplicate_of) for r in rows} == {(PageStatus.INGESTED, None)}
    # And a batch sent after the cancel reads its own copy instead of linking to it.
    third = ingest_paths(
        stores.db,
        stores.blobs,
        [scan, _scan(tmp_path / "a", "t.png", "3")],
        receipt,
        settings.ingest,
        jkm,
    )
    assert third.pages_linked == 0
    with pytest.raises(ConflictError):
        cancel_batch(stores.db, first.batch_id)
