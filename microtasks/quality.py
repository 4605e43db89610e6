"""Worker quality: each worker's accuracy per field type, from gold answers and agreement.

An estimate is the mean of a Beta posterior: a new worker starts at PRIOR_RIGHT /
(PRIOR_RIGHT + PRIOR_WRONG) = 80%, a gold answer counts GOLD_WEIGHT times as much as
agreeing (or not) with a field's final value. Per field type once there is enough
evidence for it, otherwise pooled over the worker's types. The OCR is learned the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from storage import schema
from storage.database import utcnow

PRIOR_RIGHT, PRIOR_WRONG = 4.0, 1.0
OCR_PRIOR_RIGHT, OCR_PRIOR_WRONG = 3.0, 2.0  # fields sent to people are the doubtful ones
GOLD_WEIGHT = 2.0
MIN_TYPE_EVIDENCE = 5.0


@dataclass(frozen=True)
class Estimate:
    """A worker's estimated accuracy, the evidence behind it, and their flags."""

    accuracy: float
    gold_seen: int
    gold_correct: int
    trusted: bool
    quarantined: bool


def _beta_mean(right: float, seen: float, prior_right: float, prior_wrong: float) -> float:
    return (right + prior_right) / (seen + prior_right + prior_wrong)


def estimates(conn: Connection, worker_ids: Iterable[int], field_type: str) -> dict[int, Estimate]:
    """Current accuracy estimates of these workers for one field type."""
    ids = sorted(set(worker_ids))
    if not ids:
        return {}
    q, w = schema.worker_quality, schema.workers
    rows = conn.execute(select(q).where(q.c.worker_id.in_(ids))).all()
    flags = {
        r.id: r
        for r in conn.execute(
            select(w.c.id, w.c.trusted, w.c.quarantined).where(w.c.id.in_(ids))
        ).all()
    }
    out: dict[int, Estimate] = {}
    for wid in ids:
        mine = [r for r in rows if r.worker_id == wid]
        typed = [r for r in mine if r.field_type == field_type]
        evidence = [typed[0]] if typed and _weight(typed[0]) >= MIN_TYPE_EVIDENCE else mine
        right = sum(GOLD_WEIGHT * r.gold_correct + r.agree_correct for r in evidence)
        seen = sum(_weight(r) for r in evidence)
        f = flags.get(wid)
        out[wid] = Estimate(
            accuracy=_beta_mean(right, seen, PRIOR_RIGHT, PRIOR_WRONG),
            gold_seen=sum(r.gold_seen for r in mine),
            gold_correct=sum(r.gold_correct for r in mine),
            trusted=bool(f.trusted) if f else False,
            quarantined=bool(f.quarantined) if f else False,
        )
    return out


def _weight(row: object) -> float:
    return GOLD_WEIGHT * row.gold_seen + row.agree_seen  # type: ignore[attr-defined]


def ocr_accuracy(conn: Connection, field_type: str) -> float:
    """How often the OCR's guess for fields of this type, once doubted, proved right."""
    row = conn.execute(
        select(schema.ocr_quality).where(schema.ocr_quality.c.field_type == field_type)
    ).first()
    seen, right = (row.seen, row.correct) if row else (0, 0)
    return _beta_mean(right, seen, OCR_PRIOR_RIGHT, OCR_PRIOR_WRONG)


def record_evidence(
    conn: Connection, worker_id: int, field_type: str, *, gold: bool, correct: bool
) -> None:
    """Count one gold answer, or one agreement check, for a worker and field type."""
    q = schema.worker_quality
    row = conn.execute(
        select(q).where(q.c.worker_id == worker_id, q.c.field_type == field_type)
    ).first()
    counts = {
        "gold_seen": (row.gold_seen if row else 0) + int(gold),
        "gold_correct": (row.gold_correct if row else 0) + int(gold and correct),
        "agree_seen": (row.agree_seen if row else 0) + int(not gold),
        "agree_correct": (row.agree_correct if row else 0) + int(not gold and correct),
    }
    right = GOLD_WEIGHT * counts["gold_correct"] + counts["agree_correct"]
    seen = GOLD_WEIGHT * counts["gold_seen"] + counts["agree_seen"]
    values = {
        **counts,
        "accuracy": _beta_mean(right, seen, PRIOR_RIGHT, PRIOR_WRONG),
        "updated_at": utcnow(),
    }
    if row is None:
        conn.execute(insert(q).values(worker_id=worker_id, field_type=field_type, **values))
    else:
        conn.execute(
            q.update()
            .where(q.c.worker_id == worker_id, q.c.field_type == field_type)
            .values(**values)
        )


def record_ocr_evidence(conn: Connection, field_type: str, correct: bool) -> None:
    """Count whether the OCR's guess for a doubted field of this type proved right."""
    o = schema.ocr_quality
    row = conn.execute(select(o).where(o.c.field_type == field_type)).first()
    if row is None:
        conn.execute(insert(o).values(field_type=field_type, seen=1, correct=int(correct)))
    else:
        conn.execute(
            o.update()
            .where(o.c.field_type == field_type)
            .values(seen=row.seen + 1, correct=row.correct + int(correct))
        )


def should_quarantine(estimate: Estimate, min_gold: int, below: float) -> bool:
    """A worker whose gold record shows them unreliable gets no more tasks."""
    if estimate.gold_seen < min_gold:
        return False
    gold_rate = estimate.gold_correct / estimate.gold_seen
    return gold_rate < below or estimate.accuracy < below
