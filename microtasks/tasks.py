"""What the task engine's modules share: a claimed task, a submit's outcome, the task row
an answer is recorded on, and the few rules about tasks that every step needs.

A task's life: leased to a worker (`leases`), answered (`answers`), settled or given back
(`settling`), each step on record (`audit`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from kerani.microtasks.consensus import ANSWER_KINDS, Consensus
from kerani.storage import schema

SUBMIT_KINDS = (*ANSWER_KINDS, "skip")
MAX_ANSWER_CHARS = 2000


@dataclass(frozen=True)
class ClaimedTask:
    """A task leased to a worker, with what the review page shows of it."""

    task_id: str
    field_id: int
    page_id: int
    field_name: str
    field_kind: str
    template: str
    ocr_text: str
    snippet_key: str
    lease_expires_at: datetime
    note: str | None = None  # why the task is back, e.g. the rule its value broke
    # Shown without the OCR's guess: `ocr_text` is then empty, whatever the OCR read.
    blind: bool = False
    template_id: int | None = None  # the stored version of `template` the page was read with
    escalated: bool = False  # a dispute for an arbiter: paid the arbitration rate


@dataclass(frozen=True)
class SubmitOutcome:
    """What a submit did: whether it was new, whether the field settled, which page completed."""

    recorded: bool
    settled: bool
    completed_page_id: int | None
    consensus: Consensus | None
    gold_correct: bool | None = None
    # Pages completed besides: a worker just past probation whose earlier answers, now
    # votes, settled the last open fields of other pages.
    also_completed: tuple[int, ...] = ()


@dataclass(frozen=True)
class AnswerVote:
    """One answer on a field with its worker's trust flag and one row of their quality
    counters (field_type and the counters are None when the worker has none yet)."""

    id: int
    kind: str
    value: str
    worker_id: int
    blind: bool | None  # shown without the OCR's guess (None: recorded before it was kept)
    trusted: bool
    field_type: str | None
    gold_seen: int | None
    gold_correct: int | None
    agree_seen: int | None
    agree_correct: int | None
    anchor_seen: int | None
    anchor_accepted: int | None

    @classmethod
    def from_mapping(cls, row: Any) -> AnswerVote:
        """From a mapping with (at least) these keys: a JSON object or a row's `_mapping`."""
        return cls(**{name: row[name] for name in _ANSWER_VOTE_FIELDS})


_ANSWER_VOTE_FIELDS = tuple(f.name for f in fields(AnswerVote))


@dataclass(frozen=True)
class SubmittedTask:
    """The task an answer was submitted to, as both databases' record steps return it.

    `answer_id` is None when nothing was recorded (a replay, or not the worker's lease).
    PostgreSQL reads the field's votes and the OCR's counters in the statement that records
    the answer; SQLite leaves them None and settling reads them afterwards.
    """

    id: str
    kind: str  # field | gold
    escalated: bool
    note: str | None
    gold_value: str | None
    field_id: int | None  # None for a gold task
    field_type: str
    ocr_text: str
    page_id: int
    answer_id: int | None
    ocr_group: str  # whose counters weigh the OCR's guess (fields.ocr_group, else its type)
    blind: bool = False  # the answer was given without the OCR's guess shown
    votes: tuple[AnswerVote, ...] | None = None
    ocr_seen: int | None = None
    ocr_right: int | None = None

    @classmethod
    def from_row(cls, row: Any, answer_id: int | None, **evidence: Any) -> SubmittedTask:
        """From a row with the task's columns (id, kind, escalated, note, gold_value,
        field_id, field_type, ocr_text, page_id, ocr_group, lease_blind), either dialect."""
        return cls(
            id=row.id,
            kind=row.kind,
            escalated=bool(row.escalated),
            note=row.note,
            gold_value=row.gold_value,
            field_id=row.field_id,
            field_type=row.field_type,
            ocr_text=row.ocr_text,
            page_id=row.page_id,
            answer_id=answer_id,
            ocr_group=row.ocr_group,
            blind=bool(row.lease_blind),
            **evidence,
        )


def task_priority(answers: int, escalated: bool) -> int:
    """Claim order: disputes for arbiters first, then fields with more answers (nearly done)."""
    return (1000 if escalated else 0) + answers


def new_task_id() -> str:
    """A task id nobody can guess (128 random bits)."""
    return secrets.token_urlsafe(16)


def queue_depth(db: Engine) -> int:
    """Open field tasks waiting for people (gold tasks not counted)."""
    t = schema.tasks
    with db.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(t).where(t.c.status == "open", t.c.kind == "field")
            ).scalar_one()
        )
