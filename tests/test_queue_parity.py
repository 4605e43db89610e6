"""SQLite and PostgreSQL run the task engine's life the same way.

Each hot step has two paths (one statement per step on SQLite, one combined statement on
PostgreSQL); one scripted scenario runs on both and its summary (leases in order, answers,
payments, settled fields, evidence, audit rows) must equal the one worked out from the
rules below, on each database.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from kerani.core.settings import CrowdSettings
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.gold import make_gold
from kerani.microtasks.leases import claim_next
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_queue import worker

# Three fields for people (confidence 40, under the threshold), claimed in this order.
FIELDS = [
    ("city", "text", "SHAH ALAM", 40.0),
    ("town", "text", "KLANG", 40.0),
    ("state", "text", "SELANGOR", 40.0),
]
# Two agreeing votes settle (one may be the OCR's); two people disagreeing escalate.
# Every lease blind: an answer agreeing with the OCR is an independent vote.
RULES = CrowdSettings(
    gold_every=0, blind_share=1.0, target_posterior=0.98, escalate_after=2, max_answers=5
)
# The same, with a gold snippet due at every task (one in every 1).
GOLD_DUE = RULES.model_copy(update={"gold_every": 1})


def run_scenario(stores: Stores) -> dict[str, Any]:
    """Claims, answers, a retry, a skip, an escalation and a gold answer; what they left."""
    page_id = seed_page(stores, FIELDS)
    gold_page = seed_page(stores, [("g0", "text", "WRONG", 10.0)])
    with stores.db.begin() as conn:
        f, t = schema.fields, schema.tasks
        ids = dict(conn.execute(select(f.c.name, f.c.id)).all())
        # Claim order among equals is oldest first: make it the fields' order, exactly.
        base = utcnow()
        for i, (name, *_rest) in enumerate(FIELDS):
            conn.execute(
                t.update()
                .where(t.c.field_id == ids[name])
                .values(created_at=base + timedelta(seconds=i))
            )
    make_gold(stores.db, {ids["g0"]: "RIGHT"})
    names = {fid: name for name, fid in ids.items()}
    people = {
        "ana": worker(stores, "ana"),
        "ben": worker(stores, "ben"),
        "cy": worker(stores, "cy"),
        "tess": worker(stores, "tess", trusted=True),
    }
    who = {wid: name for name, wid in people.items()}
    leases: list[tuple[str, str | None]] = []
    held: dict[str, str] = {}  # worker: task id of their latest lease
    outcomes: list[tuple[Any, ...]] = []

    def claim(name: str, rules: CrowdSettings = RULES) -> None:
        task = claim_next(stores.db, people[name], rules)
        leases.append((name, names[task.field_id] if task else None))
        if task is not None:
            held[name] = task.task_id

    def answer(name: str, kind: str, value: str, key: str) -> None:
        out = submit_answer(stores.db, held[name], people[name], kind, value, key, RULES)
        outcomes.append(
            (
                name,
                key,
                out.recorded,
                out.settled,
                out.completed_page_id == page_id,
                out.consensus.value if out.consensus else None,
                out.gold_correct,
            )
        )

    claim("ana")
    claim("ben")
    claim("cy")
    answer("ana", "value", "SHAH ALAM", "a-1")
    answer("ana", "value", "SHAH ALAM", "a-1")  # a retry
    answer("ben", "skip", "", "b-skip")
    answer("cy", "value", "SELANGOR 2", "c-1")
    claim("ben")
    answer("ben", "value", "SELANGOR 3", "b-2")
    claim("cy")
    claim("tess")
    answer("tess", "value", "SELANGOR 2", "t-1")
    answer("cy", "value", "KLANG", "c-2")
    claim("ana", GOLD_DUE)
    answer("ana", "value", "RIGHT", "a-g")
    claim("ben")

    a, led, log, w = schema.answers, schema.ledger, schema.audit_log, schema.workers
    q, o = schema.worker_quality, schema.ocr_quality
    shown = func.coalesce(schema.tasks.c.field_id, schema.tasks.c.gold_field_id)
    with stores.db.connect() as conn:
        answers = conn.execute(
            select(a.c.worker_id, shown, a.c.kind, a.c.value)
            .join(schema.tasks, schema.tasks.c.id == a.c.task_id)
            .order_by(a.c.id)
        ).all()
        paid = conn.execute(
            select(led.c.worker_id, led.c.task_kind, led.c.amount_sen, led.c.batch_id).order_by(
                led.c.id
            )
        ).all()
        fields = conn.execute(
            select(f.c.name, f.c.status, f.c.value, f.c.source, f.c.agreement, f.c.answer_count)
            .where(f.c.page_id == page_id)
            .order_by(f.c.name)
        ).all()
        audit = conn.execute(
            select(log.c.action, log.c.worker_id, log.c.field_id, log.c.detail).order_by(log.c.id)
        ).all()
        evidence = conn.execute(
            select(q.c.worker_id, q.c.field_type, q.c.gold_seen, q.c.gold_correct)
            .add_columns(q.c.agree_seen, q.c.agree_correct)
            .order_by(q.c.worker_id, q.c.field_type)
        ).all()
        ocr = conn.execute(
            select(o.c.field_type, func.sum(o.c.seen), func.sum(o.c.correct)).group_by(
                o.c.field_type
            )
        ).all()
        done = conn.execute(select(w.c.id, w.c.answers_done).where(w.c.role == "worker")).all()
        pages = conn.execute(
            select(schema.pages.c.id, schema.pages.c.status).where(
                schema.pages.c.id.in_([page_id, gold_page])
            )
        ).all()
    return {
        "leases": leases,
        "outcomes": outcomes,
        "answers": [(who[r[0]], names[r[1]], r[2], r[3]) for r in answers],
        "payments": [(who[r[0]], r[1], r[2], r[3] is not None) for r in paid],
        "fields": [(r[0], r[1], r[2], r[3], round(float(r[4]), 4), r[5]) for r in fields],
        "audit": [(r[0], who[r[1]], names[r[2]], r[3]) for r in audit],
        "evidence": [(who[r[0]], *r[1:]) for r in evidence],
        "ocr": [(r[0], int(r[1]), int(r[2])) for r in ocr],
        "answers_done": {who[r[0]]: r[1] for r in done},
        "pages": {("records" if r[0] == page_id else "gold"): r[1] for r in pages},
    }


# Worked out from the rules, step by step:
# - ana, ben, cy claim in turn: each gets the oldest open field nobody holds.
# - ana agrees with the OCR on city: two votes, posterior ~0.998 >= 0.98: settled. Her
#   retry with the same key records, pays and audits nothing.
# - ben skips town: recorded and audited (detail "skip"), not paid, not counted; released.
# - cy disagrees with the OCR on state: one vote each, unsettled, back in the queue with
#   one answer, so it now comes first for ben (who may not take town: he answered it).
# - ben gives a third answer: two people without agreement escalate it (escalate_after=2).
# - cy may not take the dispute (nor a field she answered): town. tess, trusted, gets the
#   dispute first and sides with cy: arbitrated, agreement 2 of 4 votes, paid at the
#   arbitration rate. cy then agrees with the OCR on town: the page's last field, complete.
# - ana, one answer done, is due a gold snippet: she answers it right; gold pays with no
#   batch. Then ben finds nothing left.
EXPECTED: dict[str, Any] = {
    "leases": [
        ("ana", "city"),
        ("ben", "town"),
        ("cy", "state"),
        ("ben", "state"),
        ("cy", "town"),
        ("tess", "state"),
        ("ana", "g0"),
        ("ben", None),
    ],
    "outcomes": [
        ("ana", "a-1", True, True, False, "SHAH ALAM", None),
        ("ana", "a-1", False, False, False, None, None),
        ("ben", "b-skip", True, False, False, None, None),
        ("cy", "c-1", True, False, False, "SELANGOR 2", None),
        ("ben", "b-2", True, False, False, "SELANGOR 2", None),  # a tie: the first given
        ("tess", "t-1", True, True, False, "SELANGOR 2", None),
        ("cy", "c-2", True, True, True, "KLANG", None),
        ("ana", "a-g", True, False, False, None, True),
    ],
    "answers": [
        ("ana", "city", "value", "SHAH ALAM"),
        ("ben", "town", "skip", ""),
        ("cy", "state", "value", "SELANGOR 2"),
        ("ben", "state", "value", "SELANGOR 3"),
        ("tess", "state", "value", "SELANGOR 2"),
        ("cy", "town", "value", "KLANG"),
        ("ana", "g0", "value", "RIGHT"),
    ],
    "payments": [
        ("ana", "field", 5, True),
        ("cy", "field", 5, True),
        ("ben", "field", 5, True),
        ("tess", "arbitration", 10, True),
        ("cy", "field", 5, True),
        ("ana", "gold", 5, False),
    ],
    "fields": [
        ("city", "settled", "SHAH ALAM", "human", 1.0, 1),
        ("state", "settled", "SELANGOR 2", "arbitrated", 0.5, 3),
        ("town", "settled", "KLANG", "human", 1.0, 1),
    ],
    "audit": [
        ("claim", "ana", "city", None),
        ("claim", "ben", "town", None),
        ("claim", "cy", "state", None),
        ("answer", "ana", "city", "value"),
        ("answer", "ben", "town", "skip"),
        ("answer", "cy", "state", "value"),
        ("claim", "ben", "state", None),
        ("answer", "ben", "state", "value"),
        ("claim", "cy", "town", None),
        ("claim", "tess", "state", None),
        ("answer", "tess", "state", "value"),
        ("answer", "cy", "town", "value"),
        ("claim", "ana", "g0", "gold"),
        ("answer", "ana", "g0", "value"),
    ],
    # (worker, field type, gold seen, gold right, agreements seen, agreed)
    "evidence": [
        ("ana", "text", 1, 1, 1, 1),
        ("ben", "text", 0, 0, 1, 0),
        ("cy", "text", 0, 0, 2, 2),
        ("tess", "text", 0, 0, 1, 1),
    ],
    # right on city and town, wrong on state; kept per group (template|type|evidence)
    "ocr": [("bantuan_form|text|page", 3, 2)],
    "answers_done": {"ana": 2, "ben": 1, "cy": 2, "tess": 1},  # skips and retries aside
    "pages": {"records": "routed", "gold": "gold"},
}


def test_sqlite_and_postgresql_run_the_same_scenario_the_same_way(stores: Stores) -> None:
    assert run_scenario(stores) == EXPECTED


def test_both_databases_weigh_prefilled_confirmations_and_count_anchoring(
    stores: Stores,
) -> None:
    """A confirmation of a pre-filled guess is no independent vote; a worker who let a
    wrong pre-fill through has it counted; what each was shown is kept with the answer."""
    rules = RULES.model_copy(
        update={
            "blind_share": 0.0,
            "blind_follows_ocr": False,
            "escalate_after": 3,
            "target_posterior": 0.95,
        }
    )
    seed_page(stores, [("city", "text", "SHAH ALAM", 40.0), ("state", "text", "SELANGOR", 40.0)])
    people = {name: worker(stores, name) for name in ("ana", "ben", "cy")}
    f, a, q = schema.fields, schema.answers, schema.worker_quality

    def answer(name: str, field: str, value: str) -> Any:
        task = claim_next(stores.db, people[name], rules)
        assert task is not None and task.field_name == field
        out = submit_answer(
            stores.db, task.task_id, people[name], "value", value, name + field, rules
        )
        return task, out

    first, out = answer("ana", "city", "SHAH ALAM")
    assert first.ocr_text == "SHAH ALAM" and not first.blind  # pre-filled: a confirmation
    assert not out.settled and out.consensus is not None and out.consensus.confirmations == 1
    second, out = answer("ben", "city", "SHAH ALAM")
    assert second.blind and second.ocr_text == ""  # the second look is blind
    assert out.settled and out.consensus is not None and out.consensus.independent == 2
    # State: Ana lets the OCR's wrong guess through; Ben and Cy key the truth blind.
    answer("ana", "state", "SELANGOR")
    answer("ben", "state", "SELANGOR 2")
    _task, out = answer("cy", "state", "SELANGOR 2")
    assert out.settled and out.consensus is not None and out.consensus.value == "SELANGOR 2"
    who = {wid: name for name, wid in people.items()}
    with stores.db.connect() as conn:
        blind = conn.execute(select(a.c.worker_id, a.c.blind).order_by(a.c.id)).all()
        anchoring = conn.execute(
            select(q.c.worker_id, q.c.anchor_seen, q.c.anchor_accepted).order_by(q.c.worker_id)
        ).all()
        posteriors = conn.execute(select(f.c.name, f.c.posterior).order_by(f.c.name)).all()
    assert [(who[w], b) for w, b in blind] == [
        ("ana", False),
        ("ben", True),
        ("ana", False),
        ("ben", True),
        ("cy", True),
    ]
    assert [(who[w], s, n) for w, s, n in anchoring] == [
        ("ana", 1, 1),  # shown the wrong SELANGOR pre-filled, and accepted it
        ("ben", 0, 0),
        ("cy", 0, 0),
    ]
    assert all(p is not None and p >= rules.target_posterior for _n, p in posteriors)
