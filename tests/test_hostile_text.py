"""Text a database cannot keep (a file name that is not UTF-8, NUL, lone surrogates) is
refused or made storable at the edge, never a crash that sinks a batch or a 500 that a
page's outbox would retry for ever."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from kerani.core.errors import BadInputError
from kerani.core.settings import CrowdSettings, Settings
from kerani.core.text import storable
from kerani.forms.catalogue import stored_template
from kerani.ingest.batches import ingest_paths
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_next
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import png, seed_page
from tests.test_queue import worker


def test_storable_keeps_good_text_and_mends_the_rest() -> None:
    assert storable("Resit Kedai — 1.png") == "Resit Kedai — 1.png"
    assert storable(os.fsdecode(b"scan\xff.png")) == "scan?.png"
    assert storable("a\x00b\ud800c") == "ab?c"


def test_a_file_name_that_is_not_utf8_does_not_sink_its_batch(
    settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "good.png").write_bytes(png())
    with open(os.path.join(os.fsencode(folder), b"odd\xff.png"), "wb") as f:
        f.write(png(80, 30))
    report = ingest_paths(
        stores.db,
        stores.blobs,
        [folder],
        stored_template(stores.db, "bantuan_form"),
        settings.ingest,
    )
    with stores.db.connect() as conn:
        names = set(conn.execute(select(schema.scans.c.filename)).scalars())
        status = conn.execute(select(schema.batches.c.status)).scalar_one()
    assert names == {"scans/good.png", "scans/odd?.png"}
    assert status == "ingested" and report.batch_id


@pytest.mark.parametrize("bad", ["40\x00100", "40\ud800100"])
def test_an_answer_the_database_cannot_keep_is_refused_with_a_reason(
    stores: Stores, bad: str
) -> None:
    rules = CrowdSettings(gold_every=0)
    seed_page(stores, [("postcode", "postcode", "4O100", 40.0)])
    ana = worker(stores, "ana")
    task = claim_next(stores.db, ana, rules)
    assert task is not None
    with pytest.raises(BadInputError, match="cannot be stored"):
        submit_answer(stores.db, task.task_id, ana, "value", bad, "k1", rules)
    with pytest.raises(BadInputError, match="cannot be stored"):
        submit_answer(stores.db, task.task_id, ana, "value", "40100", "k2", rules, prefilled=bad)
    # Nothing was recorded, and the same task still takes a good answer.
    assert submit_answer(stores.db, task.task_id, ana, "value", "40100", "k3", rules).recorded
