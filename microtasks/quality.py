"""Worker quality: each worker's accuracy per field type, from gold answers and agreement.

An estimate is the mean of a Beta posterior: a new worker starts at PRIOR_RIGHT /
(PRIOR_RIGHT + PRIOR_WRONG) = 80%, a gold answer counts GOLD_WEIGHT times as much as
agreeing (or not) with a field's final value. Per field type once there is enough
evidence for it, otherwise pooled over the worker's types. The OCR is learned the same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage import schema
from storage.database import utcnow

PRIOR_RIGHT, PRIOR_WRONG = 4.0, 1.0
OCR_PRIOR_RIGHT, OCR_PRIOR_WRONG = 3.0, 2.0  # fields sent to people are the doubtful ones
GOLD_WEIGHT = 2.0
MIN_TYPE_EVIDENCE = 5.0
OCR_SHARDS = 16


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
    o = schema.ocr_quality
    seen, right = conn.execute(
        select(func.coalesce(func.sum(o.c.seen), 0), func.coalesce(func.sum(o.c.correct), 0)).where(
            o.c.field_type == field_type
        )
    ).one()
    return _beta_mean(right, seen, OCR_PRIOR_RIGHT, OCR_PRIOR_WRONG)


def _upsert(
    conn: Connection,
    table: Table,
    keys: dict[str, Any],
    add: dict[str, int],
    extra: dict[str, Any] | None = None,
) -> None:
    """Insert a counter row or add to it, atomically (no read-modify-write race)."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = dialect_insert(table).values(**keys, **add, **(extra or {}))
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c[k] for k in keys],
            set_={**{k: table.c[k] + v for k, v in add.items()}, **(extra or {})},
        )
    )


def record_evidence(
    conn: Connection, worker_id: int, field_type: str, *, gold: bool, correct: bool
) -> None:
    """Count one gold answer, or one agreement check, for a worker and field type."""
    add = {
        "gold_seen": int(gold),
        "gold_correct": int(gold and correct),
        "agree_seen": int(not gold),
        "agree_correct": int(not gold and correct),
    }
    # `accuracy` is derived on read from the counters; the column keeps the last prior mean.
    _upsert(
        conn,
        schema.worker_quality,
        {"worker_id": worker_id, "field_type": field_type},
        add,
        {"accuracy": PRIOR_RIGHT / (PRIOR_RIGHT + PRIOR_WRONG), "updated_at": utcnow()},
    )


def record_ocr_evidence(conn: Connection, field_type: str, correct: bool) -> None:
    """Count whether the OCR's guess for a doubted field of this type proved right."""
    _upsert(
        conn,
        schema.ocr_quality,
        {"field_type": field_type, "shard": random.randrange(OCR_SHARDS)},
        {"seen": 1, "correct": int(correct)},
    )


def wilson_upper(correct: int, seen: int, z: float = 1.64) -> float:
    """Upper end of the Wilson score interval (one-sided 95% at z=1.64) of a success rate."""
    if seen == 0:
        return 1.0
    p = correct / seen
    centre = p + z * z / (2 * seen)
    spread = z * math.sqrt(p * (1 - p) / seen + z * z / (4 * seen * seen))
    return min(1.0, (centre + spread) / (1 + z * z / seen))


def should_quarantine(estimate: Estimate, min_gold: int, below: float) -> bool:
    """Pause a worker only when their gold record shows, beyond bad luck, that they are unreliable.

    The test is the Wilson upper bound of their gold accuracy: a careful worker who misses
    two of their first four gold keeps working; one who fails all four does not.
    """
    if estimate.gold_seen < min_gold:
        return False
    return wilson_upper(estimate.gold_correct, estimate.gold_seen) < below
