"""Batches belong to the agency that submitted them: an agency sees only its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from kerani.core.errors import BadInputError
from kerani.core.settings import Settings
from kerani.forms.catalogue import stored_template
from kerani.ingest.batches import ingest_paths
from kerani.people.workers import add_person, agency_named
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page, sign_in_with_code


def _owned_batch(stores: Stores, agency_id: int | None) -> str:
    batch = batch_of(stores, seed_page(stores, [("city", "text", "SHAH ALAM", 40.0)]))
    with stores.db.begin() as conn:
        conn.execute(
            schema.batches.update().where(schema.batches.c.id == batch).values(agency_id=agency_id)
        )
    return batch


def test_an_agency_sees_only_its_own_batches(settings: Settings, stores: Stores) -> None:
    codes = {name: add_person(stores.db, name, "agency") for name in ("jkm", "lhdn")}
    ours = _owned_batch(stores, agency_named(stores.db, "jkm"))
    theirs = _owned_batch(stores, agency_named(stores.db, "lhdn"))
    app = create_app(settings, stores)
    client = TestClient(app, follow_redirects=False)
    assert sign_in_with_code(client, codes["jkm"]).status_code == 303
    status = client.get("/status").text
    assert ours[:12] in status and theirs[:12] not in status
    page = client.get(f"/batches/{ours}/report")
    assert page.status_code == 200
    # Accuracy by source, honest about what it rests on.
    assert "Estimated accuracy by source" in page.text and "not enough evidence yet" in page.text
    # Another agency's batch is as good as missing, whole id or prefix.
    assert client.get(f"/batches/{theirs}/report").status_code == 404
    assert client.get(f"/batches/{theirs[:8]}/report").status_code == 404
    api = TestClient(app).get("/api/batches", headers={"authorization": f"Bearer {codes['jkm']}"})
    assert [b["batch_id"] for b in api.json()] == [ours]
    # Operators see every batch.
    operator = TestClient(app, follow_redirects=False)
    sign_in_with_code(operator, add_person(stores.db, "olivia", "operator"))
    everything = operator.get("/status").text
    assert ours[:12] in everything and theirs[:12] in everything


def test_a_batch_is_submitted_for_a_named_agency(
    settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    scan = tmp_path / "scan.png"
    Image.new("L", (400, 300), 255).save(scan)
    with pytest.raises(BadInputError, match="no agency user called 'nobody'"):
        agency_named(stores.db, "nobody")
    add_person(stores.db, "worker-not-agency", "worker")
    with pytest.raises(BadInputError):
        agency_named(stores.db, "worker-not-agency")
    add_person(stores.db, "jkm", "agency")
    jkm = agency_named(stores.db, "jkm")
    report = ingest_paths(
        stores.db,
        stores.blobs,
        [scan],
        stored_template(stores.db, "bantuan_form"),
        settings.ingest,
        jkm,
    )
    operators = ingest_paths(
        stores.db, stores.blobs, [scan], stored_template(stores.db, "bantuan_form"), settings.ingest
    )
    assert report.batch_id != operators.batch_id  # the same scans for another owner: new batch
    with stores.db.connect() as conn:
        owner = conn.execute(
            select(schema.batches.c.agency_id).where(schema.batches.c.id == report.batch_id)
        ).scalar_one()
    assert owner == jkm
