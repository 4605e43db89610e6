"""Quality with no truth anywhere, end to end through the HTTP API: staff key gold blind
twice, a new worker who accepts every pre-fill settles nothing alone and is paused by
that gold, while honest workers pass probation and settle fields."""

from __future__ import annotations

import secrets

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from kerani.core.settings import CrowdSettings, Settings
from kerani.core.vocabulary import FieldStatus, Role, Sensitivity
from kerani.microtasks.gold import record_keying
from kerani.people.workers import add_person, person_by_code
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import seed_page

RULES = CrowdSettings(
    gold_every=3,
    gold_every_probation=2,
    probation_min_gold=3,
    blind_share=0.0,
    blind_follows_ocr=False,
    blind_share_gold=1.0,  # gold shown blind: a pre-fill spammer can only leave it blank
)


def _public(stores: Stores) -> None:
    with stores.db.begin() as conn:
        conn.execute(update(schema.fields).values(sensitivity=Sensitivity.PUBLIC))


def _work_pages(stores: Stores, count: int) -> dict[str, str]:
    """Pages of ten work fields each (a worker sees ten of a document), OCR'd one letter
    off; returns each field's true text."""
    work = {f"w{i:02d}": f"LINE {i}" for i in range(count)}
    names = sorted(work)
    for start in range(0, count, 10):
        fields = [(n, "text", f"LlNE {int(n[1:])}", 40.0) for n in names[start : start + 10]]
        seed_page(stores, fields, template="receipt")
    return work


def _staff_gold(stores: Stores, page_id: int, truth: dict[str, str]) -> None:
    """Two staff key every field of a page blind; they agree, so each becomes gold."""
    keyers = [
        person_by_code(stores.db, add_person(stores.db, f"staff-{i}", Role.OPERATOR)).id
        for i in (1, 2)
    ]
    f = schema.fields
    with stores.db.connect() as conn:
        rows = conn.execute(select(f.c.id, f.c.name).where(f.c.page_id == page_id)).all()
    for row in rows:
        for round_, keyer in zip((1, 2), keyers, strict=True):
            record_keying(stores.db, row.id, round_, keyer, "value", truth[row.name])


def _work(client: TestClient, code: str, answer: object, limit: int = 60) -> tuple[int, bool]:
    """Claim and answer through the API until there is nothing (204) or the worker is
    paused (403); returns (answers given, paused)."""
    auth = {"Authorization": f"Bearer {code}"}
    for n in range(limit):
        claim = client.post("/api/tasks/claim", headers=auth)
        if claim.status_code in (204, 403):
            return n, claim.status_code == 403
        task = claim.json()
        body = answer(task)  # type: ignore[operator]
        body["idempotency_key"] = secrets.token_urlsafe(8)
        sent = client.post(f"/api/tasks/{task['task_id']}/answer", json=body, headers=auth)
        assert sent.status_code == 200, sent.text
    return limit, False


def test_a_prefill_spammer_settles_nothing_alone_and_is_paused_by_staff_gold(
    settings: Settings, stores: Stores
) -> None:
    settings = settings.model_copy(update={"crowd": RULES})
    # A first page whose OCR is wrong everywhere; staff key it, so it becomes gold.
    truth = {f"g{i}": f"RIGHT {i}" for i in range(8)}
    gold_page = seed_page(stores, [(n, "text", "WR0NG", 40.0) for n in truth], template="receipt")
    _work_pages(stores, 30)
    _public(stores)
    _staff_gold(stores, gold_page, truth)
    spammer = add_person(
        stores.db, "spammer", Role.WORKER, practised=True
    )  # a new worker: on probation
    with TestClient(create_app(settings, stores)) as client:
        answered, paused = _work(
            client,
            spammer,
            lambda task: (
                {"kind": "value", "value": task["ocr_guess"]}
                if task["ocr_guess"]
                else {"kind": "blank", "value": ""}
            ),
        )
    assert paused and answered >= 1
    f = schema.fields
    with stores.db.connect() as conn:
        statuses = conn.execute(
            select(f.c.status).where(f.c.name.like("w%")).order_by(f.c.name)
        ).scalars()
        assert set(statuses) == {FieldStatus.IN_REVIEW}  # nothing settled on the spammer's word
        worker = conn.execute(
            select(schema.workers.c.quarantined, schema.workers.c.proven).where(
                schema.workers.c.name == "spammer"
            )
        ).one()
    assert worker.quarantined and not worker.proven


def test_honest_new_workers_pass_probation_and_then_settle_fields(
    settings: Settings, stores: Stores
) -> None:
    settings = settings.model_copy(update={"crowd": RULES})
    truth = {f"g{i}": f"RIGHT {i}" for i in range(8)}
    gold_page = seed_page(stores, [(n, "text", "WR0NG", 40.0) for n in truth], template="receipt")
    work = _work_pages(stores, 30)
    _public(stores)
    _staff_gold(stores, gold_page, truth)
    f = schema.fields
    with stores.db.connect() as conn:
        names = dict(conn.execute(select(f.c.id, f.c.name)).tuples().all())
        tasks = dict(
            conn.execute(
                select(schema.tasks.c.id, schema.tasks.c.field_id).where(
                    schema.tasks.c.kind == "field"
                )
            )
            .tuples()
            .all()
        )

    def honest(task: dict[str, str]) -> dict[str, str]:
        # They read the snippet: gold shows a g-field, work a w-field (ids tell the test).
        with stores.db.connect() as conn:
            row = conn.execute(
                select(schema.tasks.c.field_id, schema.tasks.c.gold_field_id).where(
                    schema.tasks.c.id == task["task_id"]
                )
            ).one()
        name = names[row.field_id or row.gold_field_id]
        return {"kind": "value", "value": (truth | work)[name]}

    codes = [add_person(stores.db, f"honest-{i}", Role.WORKER, practised=True) for i in range(2)]
    with TestClient(create_app(settings, stores)) as client:
        for code in codes:
            _answered, paused = _work(client, code, honest)
            assert not paused
    with stores.db.connect() as conn:
        rows = conn.execute(select(f.c.name, f.c.status, f.c.value).where(f.c.name.like("w%")))
        settled = {r.name: r.value for r in rows if r.status == FieldStatus.SETTLED}
        proven = conn.execute(
            select(schema.workers.c.proven).where(schema.workers.c.name.like("honest%"))
        ).scalars()
        assert all(proven)
    assert tasks  # work was routed to people
    # Once both were proven, their blind answers (every second look is blind) settled work.
    assert settled == {n: v for n, v in work.items() if n in settled} and len(settled) >= 5
