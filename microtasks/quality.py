"""Worker quality: each worker's accuracy per field type, from gold answers and agreement.

An estimate is the mean of a Beta posterior: a new worker starts at PRIOR_RIGHT /
(PRIOR_RIGHT + PRIOR_WRONG) = 80%, a gold answer counts GOLD_WEIGHT times as much as
agreeing (or not) with a field's final value. Per field type once there is enough
evidence for it, otherwise pooled over the worker's types. The OCR is learned the same way.

How often a worker accepts a wrong pre-filled guess (anchoring) is a Beta mean too, pooled
over their types: counted whenever a worker was shown a pre-fill that gold or the field's
settled value later showed wrong. Its prior, 30%, is what checking a pre-filled value
typically lets through (Barchard et al. 2008: blind double entry left about 28× fewer
errors than visual checking); a worker's own record soon replaces it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Integer,
    Select,
    String,
    bindparam,
    func,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY

from kerani.core.stats import wilson_interval
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.statements import dialect_insert, prepared

PRIOR_RIGHT, PRIOR_WRONG = 4.0, 1.0
PRIOR_MEAN = PRIOR_RIGHT / (PRIOR_RIGHT + PRIOR_WRONG)
OCR_PRIOR_RIGHT, OCR_PRIOR_WRONG = 3.0, 2.0  # fields sent to people are the doubtful ones
GOLD_WEIGHT = 2.0
MIN_TYPE_EVIDENCE = 5.0
OCR_SHARDS = 64
ANCHOR_PRIOR_ACCEPTED, ANCHOR_PRIOR_REJECTED = 1.5, 3.5
COUNTERS = (
    "gold_seen",
    "gold_correct",
    "agree_seen",
    "agree_correct",
    "anchor_seen",
    "anchor_accepted",
)


@dataclass(frozen=True)
class Outcome:
    """What one settled field (or gold answer) showed of one worker."""

    correct: bool
    # Shown a pre-filled guess that proved wrong, and whether they accepted it anyway.
    anchor_seen: bool = False
    anchor_accepted: bool = False

    @property
    def counted(self) -> bool:
        """Whether it measures their accuracy: letting a wrong pre-fill through measures
        their checking (the anchoring counters) instead, not their keying."""
        return not (self.anchor_seen and self.anchor_accepted)


@dataclass(frozen=True)
class Estimate:
    """A worker's estimated accuracy, the evidence behind it, and their flags."""

    accuracy: float
    gold_seen: int
    gold_correct: int
    trusted: bool
    quarantined: bool
    accepts_wrong: float = ANCHOR_PRIOR_ACCEPTED / (ANCHOR_PRIOR_ACCEPTED + ANCHOR_PRIOR_REJECTED)
    proven: bool = False  # past probation: their answers are votes


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
            select(w.c.id, w.c.trusted, w.c.quarantined, w.c.proven).where(w.c.id.in_(ids))
        ).all()
    }
    out: dict[int, Estimate] = {}
    for wid in ids:
        f = flags.get(wid)
        out[wid] = estimate_from(
            [r for r in rows if r.worker_id == wid],
            field_type,
            trusted=bool(f.trusted) if f else False,
            quarantined=bool(f.quarantined) if f else False,
            proven=bool(f.proven) if f else False,
        )
    return out


def estimate_from(
    rows: Sequence[Any],
    field_type: str,
    *,
    trusted: bool,
    quarantined: bool,
    proven: bool = False,
) -> Estimate:
    """One worker's estimate from their worker_quality rows (any columns named like it)."""
    typed = [r for r in rows if r.field_type == field_type]
    evidence = [typed[0]] if typed and _weight(typed[0]) >= MIN_TYPE_EVIDENCE else rows
    right = sum(GOLD_WEIGHT * r.gold_correct + r.agree_correct for r in evidence)
    seen = sum(_weight(r) for r in evidence)
    anchor_seen = sum(r.anchor_seen or 0 for r in rows)
    anchor_accepted = sum(r.anchor_accepted or 0 for r in rows)
    return Estimate(
        accuracy=_beta_mean(right, seen, PRIOR_RIGHT, PRIOR_WRONG),
        gold_seen=sum(r.gold_seen for r in rows),
        gold_correct=sum(r.gold_correct for r in rows),
        trusted=trusted,
        quarantined=quarantined,
        accepts_wrong=_beta_mean(
            anchor_accepted, anchor_seen, ANCHOR_PRIOR_ACCEPTED, ANCHOR_PRIOR_REJECTED
        ),
        proven=proven,
    )


def _weight(row: object) -> float:
    return GOLD_WEIGHT * row.gold_seen + row.agree_seen  # type: ignore[attr-defined]


def ocr_accuracy(conn: Connection, ocr_group: str) -> float:
    """How often the OCR's guess in this group (fields.ocr_group), once doubted, proved right."""
    row = conn.execute(prepared(conn, ocr_counts), {"ocr_group": ocr_group}).one()
    return ocr_estimate(row.ocr_seen, row.ocr_right)


def ocr_counts(_dialect: str = "", ocr_group: Any = None) -> Select[Any]:
    """A one-row query of the OCR's counters, summed over the shards, as ocr_seen and
    ocr_right: for :ocr_group, or for the group column given (a correlation)."""
    o = schema.ocr_quality
    return select(
        func.coalesce(func.sum(o.c.seen), 0).label("ocr_seen"),
        func.coalesce(func.sum(o.c.correct), 0).label("ocr_right"),
    ).where(o.c.field_type == (bindparam("ocr_group") if ocr_group is None else ocr_group))


def ocr_estimate(seen: int, right: int) -> float:
    """The OCR's estimated accuracy from its counters (the Beta mean with the OCR's prior)."""
    return _beta_mean(right, seen, OCR_PRIOR_RIGHT, OCR_PRIOR_WRONG)


def _evidence_upsert(dialect: str) -> Any:
    """One worker's counters for a field type: insert the row or add to it, atomically."""
    q = schema.worker_quality
    stmt = dialect_insert(dialect)(q).values(
        worker_id=bindparam("worker_id"),
        field_type=bindparam("field_type"),
        gold_seen=bindparam("gold_seen"),
        gold_correct=bindparam("gold_correct"),
        agree_seen=bindparam("agree_seen"),
        agree_correct=bindparam("agree_correct"),
        anchor_seen=bindparam("anchor_seen"),
        anchor_accepted=bindparam("anchor_accepted"),
        # `accuracy` is derived on read from the counters; the column keeps the prior mean.
        accuracy=PRIOR_MEAN,
        updated_at=bindparam("now"),
    )
    return add_evidence_on_conflict(stmt)


def add_evidence_on_conflict(stmt: Any) -> Any:
    """Make an insert into worker_quality add its counters to a row that exists already."""
    q = schema.worker_quality
    return stmt.on_conflict_do_update(
        index_elements=[q.c.worker_id, q.c.field_type],
        set_={
            **{c: q.c[c] + stmt.excluded[c] for c in COUNTERS},
            "updated_at": stmt.excluded.updated_at,
        },
    )


def _outcome(result: bool | Outcome) -> Outcome:
    return result if isinstance(result, Outcome) else Outcome(result)


def evidence_params(
    field_type: str, outcomes: Mapping[int, bool | Outcome], *, gold: bool
) -> list[dict[str, Any]]:
    """Parameters of the counter upsert, one set per worker, in worker order.

    In worker order so that concurrent settles lock the rows in one order (no deadlock).
    """
    now = utcnow()
    params = []
    for worker_id, result in sorted(outcomes.items()):
        o = _outcome(result)
        params.append(
            {
                "worker_id": worker_id,
                "field_type": field_type,
                "gold_seen": int(gold and o.counted),
                "gold_correct": int(gold and o.counted and o.correct),
                "agree_seen": int(not gold and o.counted),
                "agree_correct": int(not gold and o.counted and o.correct),
                "anchor_seen": int(o.anchor_seen),
                "anchor_accepted": int(o.anchor_seen and o.anchor_accepted),
                "now": now,
            }
        )
    return params


def outcome_arrays(outcomes: Mapping[int, bool | Outcome]) -> dict[str, list[int]]:
    """The arrays of agreement_upsert_from_arrays, in worker order (one lock order)."""
    order = sorted(outcomes)
    each = [_outcome(outcomes[w]) for w in order]
    return {
        "voters": order,
        "counted": [int(o.counted) for o in each],
        "agreed": [int(o.counted and o.correct) for o in each],
        "anchor_seen": [int(o.anchor_seen) for o in each],
        "anchor_accepted": [int(o.anchor_seen and o.anchor_accepted) for o in each],
    }


def agreement_upsert_from_arrays(_dialect: str = "postgresql") -> Any:
    """PostgreSQL: count agreement checks of many workers in one statement, from the
    arrays of outcome_arrays (:voters, :counted, :agreed, :anchor_seen, :anchor_accepted,
    1 or 0),
    for :field_type at :now."""
    q = schema.worker_quality
    arrays = ("voters", "counted", "agreed", "anchor_seen", "anchor_accepted")
    # One unnest of several arrays zips them (a set-returning function per array would too,
    # but only while they are of one length).
    rows = (
        func.unnest(*(bindparam(a, type_=ARRAY(Integer)) for a in arrays))
        .table_valued(*arrays)
        .render_derived(name="outcome")
    )
    counts = select(
        rows.c.voters,
        bindparam("field_type", type_=String),
        literal(0),
        literal(0),
        rows.c.counted,
        rows.c.agreed,
        rows.c.anchor_seen,
        rows.c.anchor_accepted,
        literal(PRIOR_MEAN),
        bindparam("now", type_=DateTime(timezone=True)),
    ).order_by(rows.c.voters)  # one lock order for every settle (no deadlock)
    columns = ["worker_id", "field_type", *COUNTERS, "accuracy", "updated_at"]
    return add_evidence_on_conflict(dialect_insert("postgresql")(q).from_select(columns, counts))


def record_evidence(
    conn: Connection, worker_id: int, field_type: str, *, gold: bool, correct: bool | Outcome
) -> None:
    """Count one gold answer, or one agreement check, for a worker and field type."""
    record_outcomes(conn, field_type, {worker_id: correct}, gold=gold)


def record_outcomes(
    conn: Connection,
    field_type: str,
    outcomes: Mapping[int, bool | Outcome],
    *,
    gold: bool = False,
) -> None:
    """Count, in one round trip, whether each worker was right (on gold, or by agreement)."""
    if outcomes:
        params = evidence_params(field_type, outcomes, gold=gold)
        conn.execute(prepared(conn, _evidence_upsert), params)


def ocr_shard(worker_id: int) -> int:
    """The shard of a type's OCR counters that settles by this worker count on.

    A worker settles one field at a time, so concurrent settles wait for the same row
    only when their workers share a shard (a random shard made that likely under load).
    """
    return worker_id % OCR_SHARDS


def ocr_evidence_upsert(dialect: str) -> Any:
    """Count, when :ocr_voted, whether the OCR was right (:ocr_right 0/1) on one shard of
    :ocr_group's counters."""
    o = schema.ocr_quality
    counts = select(
        bindparam("ocr_group", type_=String),
        bindparam("shard", type_=Integer),
        literal(1),
        bindparam("ocr_right", type_=Integer),
    ).where(bindparam("ocr_voted", type_=Boolean))  # the WHERE also lets SQLite parse ON CONFLICT
    stmt = dialect_insert(dialect)(o).from_select(
        ["field_type", "shard", "seen", "correct"], counts
    )
    return add_ocr_on_conflict(stmt)


def add_ocr_on_conflict(stmt: Any) -> Any:
    """Make an insert into ocr_quality add its counts to a shard row that exists already."""
    o = schema.ocr_quality
    return stmt.on_conflict_do_update(
        index_elements=[o.c.field_type, o.c.shard],
        set_={c: o.c[c] + stmt.excluded[c] for c in ("seen", "correct")},
    )


def ocr_params(ocr_group: str, correct: bool | None, worker_id: int) -> dict[str, Any]:
    """Parameters of ocr_evidence_upsert for a settle by `worker_id`; `correct` None when
    the OCR did not vote."""
    return {
        "ocr_group": ocr_group,
        "shard": ocr_shard(worker_id),
        "ocr_right": int(bool(correct)),
        "ocr_voted": correct is not None,
    }


def wilson_upper(correct: int, seen: int, z: float = 1.64) -> float:
    """Upper end of the Wilson score interval (one-sided 95% at z=1.64) of a success rate."""
    return wilson_interval(correct, seen, z)[1]


def should_quarantine(estimate: Estimate, min_gold: int, below: float) -> bool:
    """Pause a worker only when their gold record shows, beyond bad luck, that they are unreliable.

    The test is the Wilson upper bound of their gold accuracy: a careful worker who misses
    two of their first four gold keeps working; one who fails all four does not.
    """
    if estimate.gold_seen < min_gold:
        return False
    return wilson_upper(estimate.gold_correct, estimate.gold_seen) < below
