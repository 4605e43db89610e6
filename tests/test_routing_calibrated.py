"""Routing with a calibrated rule: the rule decides; without one the old floor applies."""

from __future__ import annotations

from sqlalchemy import select, update

from kerani.microtasks.routing import decide, route_page
from kerani.ocr.calibration import Calibration, GroupRule
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import seed_page


def _calibration() -> Calibration:
    return Calibration(
        template="t",
        target=0.995,
        z=1.0,
        rules={
            "line|agree": GroupRule(min_confidence=80.0, samples=500, accepted=300, errors=0),
            "line|page": GroupRule(min_confidence=None, samples=500, accepted=0, errors=0),
            "*|page": GroupRule(min_confidence=95.0, samples=900, accepted=400, errors=1),
        },
    )


def test_calibrated_rule_decides() -> None:
    cal = _calibration()
    assert decide("line", "TOTAL 9.00", 85, 96, cal, "agree").accept
    assert not decide("line", "TOTAL 9.00", 79, 96, cal, "agree").accept
    # The calibration found no safe floor for page-only lines: never, whatever the score.
    assert not decide("line", "TOTAL 9.00", 100, 96, cal, "page").accept
    # A date has no rule of its own: the pooled rule of its evidence applies ...
    assert decide("date", "01/02/2024", 96, 99, cal, "page").accept
    # ... but never for a value that fails its validator, nor for an uncalibrated evidence.
    assert not decide("date", "31/02/2024", 99, 0, cal, "page").accept
    assert not decide("date", "01/02/2024", 99, 0, cal, "disagree").accept
    # Without a calibration, lines are never auto-accepted (the old rule).
    assert not decide("line", "TOTAL 9.00", 100, 50).accept


def test_route_page_uses_the_calibration(stores: Stores) -> None:
    page_id = seed_page(
        stores,
        [("line_001", "line", "TOTAL 9.00", 90.0), ("line_002", "line", "CASH", 99.0)],
        template="receipt",
    )
    # Undo the uncalibrated routing seed_page did, and record the evidence of each guess.
    with stores.db.begin() as conn:
        conn.execute(schema.tasks.delete())
        conn.execute(update(schema.fields).values(status="pending"))
        conn.execute(
            update(schema.fields)
            .where(schema.fields.c.name == "line_001")
            .values(ocr_engine="tesseract-5.3.0+agree")
        )
        conn.execute(update(schema.pages).values(status="ocred"))
    assert route_page(stores.db, page_id, 96.0, _calibration()) == (1, 1)
    with stores.db.connect() as conn:
        status = dict(conn.execute(select(schema.fields.c.name, schema.fields.c.status)).all())
    assert status == {"line_001": "auto_accepted", "line_002": "in_review"}
