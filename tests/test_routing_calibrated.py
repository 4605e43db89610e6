"""Routing with a calibrated rule: the rule decides; without one the old floor applies."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from kerani.microtasks.routing import decide, route_page
from kerani.ocr.calibration import Calibration, GroupRule
from kerani.storage import schema
from kerani.storage.database import utcnow
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
    f, r = schema.fields, schema.ocr_readings
    ids = _field_ids(stores)
    # Undo the uncalibrated routing seed_page did, and record the evidence of each guess.
    with stores.db.begin() as conn:
        conn.execute(schema.tasks.delete())
        conn.execute(update(f).values(status="pending"))
        conn.execute(update(r).where(r.c.field_id == ids["line_001"]).values(evidence="agree"))
        conn.execute(update(schema.pages).values(status="ocred"))
    assert route_page(stores.db, page_id, 96.0, _calibration()) == (1, 1)
    with stores.db.connect() as conn:
        status = dict(conn.execute(select(f.c.name, f.c.status)).all())
    assert status == {"line_001": "auto_accepted", "line_002": "in_review"}


def _field_ids(stores: Stores) -> dict[str, int]:
    with stores.db.connect() as conn:
        return dict(conn.execute(select(schema.fields.c.name, schema.fields.c.id)).all())


def test_route_page_judges_the_guess_not_other_readings(stores: Stores) -> None:
    page_id = seed_page(stores, [("line_001", "line", "CASH", 99.0)], template="receipt")
    field_id = _field_ids(stores)["line_001"]
    with stores.db.begin() as conn:
        conn.execute(schema.tasks.delete())
        conn.execute(update(schema.fields).values(status="pending"))
        conn.execute(update(schema.pages).values(status="ocred"))
        # Another engine read it twice over ("agree", which the calibration accepts), but
        # the guess was read from the page alone, which it never accepts for lines.
        conn.execute(
            insert(schema.ocr_readings).values(
                field_id=field_id,
                engine="second",
                text="CASH",
                confidence=99.0,
                evidence="agree",
                is_guess=False,
                created_at=utcnow(),
            )
        )
    assert route_page(stores.db, page_id, 96.0, _calibration()) == (0, 1)
    with stores.db.connect() as conn:
        tasks = conn.execute(select(schema.tasks.c.field_id)).scalars().all()
    assert tasks == [field_id]
