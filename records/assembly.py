"""Reassembly: when every field of a page is settled, validate it and build its record.

A record is written only when its fields pass their template's validators and cross-field
rules. A field that fails is reported with the rule as its note, and the caller sends it
back to people (kerani.flows.documents: reopened, escalated to a trusted worker). A field
that a rule has sent back once and a trusted worker has settled again is not sent back a
second time: the record is written with the problem kept on it, so that a form
inconsistent on paper cannot loop forever.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Row, and_, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from kerani.core.errors import NotFoundError
from kerani.core.vocabulary import FieldStatus, PageStatus, ValueKind
from kerani.forms.catalogue import template_of
from kerani.forms.rules import Captured
from kerani.forms.templates import Template
from kerani.ocr.calibration import engine_label
from kerani.storage import schema
from kerani.storage.database import utcnow

SETTLED = (FieldStatus.AUTO_ACCEPTED, FieldStatus.SETTLED)
# A page's record is built once it is routed, and built again when fields of a complete
# page were sent back and have settled again.
ASSEMBLED_FROM = (PageStatus.ROUTED, PageStatus.COMPLETE)


@dataclass(frozen=True)
class Problem:
    """A rule one field of a record breaks."""

    field: str
    rule: str
    message: str

    @property
    def note(self) -> str:
        """What the worker who checks the field again is told."""
        return f"{self.rule}: {self.message}"


@dataclass(frozen=True)
class AssemblyOutcome:
    """What reassembling a page did: built its record, sent fields back, or waited."""

    page_id: int
    # send_back: fields break rules and must go back to people (the caller does that and
    # reports sent_back); no record is written meanwhile.
    status: Literal["not_ready", "assembled", "send_back", "sent_back"]
    sent_back: dict[str, str] = field(default_factory=dict)  # field name -> note
    field_ids: dict[str, int] = field(default_factory=dict)  # ids of the fields in sent_back
    flagged: tuple[Problem, ...] = ()  # problems kept on the record after arbitration

    def as_dict(self) -> dict[str, Any]:
        """Plain data for flow results and logs."""
        return {
            "page_id": self.page_id,
            "status": self.status,
            "sent_back": dict(self.sent_back),
            "flagged": [p.note for p in self.flagged],
        }


def find_problems(template: Template, rows: Sequence[Row[Any]]) -> list[Problem]:
    """Every validator and cross-field rule the page's settled values break."""
    problems: list[Problem] = []
    present = {r.name: r for r in rows}
    for r in rows:
        # A form's fields and a template-free page's key fields have validators; its free
        # text lines have nothing to check beyond what people typed.
        spec = template.spec(r.name)
        if spec is not None:
            p = spec.problem(r.value, r.value_kind or ValueKind.TEXT)
            if p is not None:
                problems.append(Problem(r.name, f"{r.name}.{p.rule}", p.message))
    captured = {r.name: Captured(r.value, r.value_kind or ValueKind.TEXT) for r in rows}
    for failure in template.broken_rules(captured):
        problems.extend(
            Problem(name, failure.rule, failure.message)
            for name in failure.fields
            if name in present
        )
    return problems


def _field_rows(conn: Connection, page_id: int) -> list[Row[Any]]:
    f, t, a = schema.fields, schema.tasks, schema.answers
    guess = schema.ocr_readings
    people = (
        select(func.count(func.distinct(a.c.worker_id)))
        .where(a.c.task_id == t.c.id)
        .scalar_subquery()
    )
    return list(
        conn.execute(
            select(
                f,
                people.label("people"),
                guess.c.engine.label("guess_engine"),
                guess.c.evidence.label("guess_evidence"),
            )
            .outerjoin(t, t.c.field_id == f.c.id)
            .outerjoin(guess, and_(guess.c.field_id == f.c.id, guess.c.is_guess))
            .where(f.c.page_id == page_id)
            .order_by(f.c.id)
        ).all()
    )


def _sent_back_before(r: Row[Any]) -> bool:
    # A rule sent the field back once (reopen_field keeps the note in validation_error) and a
    # trusted worker has settled it again: asking again would loop, so keep it, flagged.
    return r.validation_error is not None


def _cell(r: Row[Any], problems: list[Problem]) -> dict[str, Any]:
    return {
        "value": r.value if r.value_kind == ValueKind.TEXT else None,
        "kind": r.value_kind,
        "source": r.source,
        "agreement": r.agreement,
        "answers": r.answer_count,
        "people": int(r.people or 0),
        "ocr_text": r.ocr_text,
        "ocr_confidence": r.ocr_confidence,
        # The record keeps the label fields.ocr_engine held before the readings had a
        # table of their own (migration 0009): engine, and the evidence after a '+'.
        "ocr_engine": (
            engine_label(r.guess_engine, r.guess_evidence) if r.guess_engine is not None else None
        ),
        "problems": [p.note for p in problems if p.field == r.name],
    }


def reassemble_page(db: Engine, page_id: int) -> AssemblyOutcome:
    """Validate a settled page and write its record, or report the fields to send back."""
    with db.connect() as conn:
        page = conn.execute(select(schema.pages).where(schema.pages.c.id == page_id)).first()
        if page is None:
            raise NotFoundError(f"no page {page_id}")
        rows = _field_rows(conn, page_id)
    if page.status not in ASSEMBLED_FROM or any(r.status not in SETTLED for r in rows):
        return AssemblyOutcome(page_id, "not_ready")
    problems = find_problems(template_of(db, page.template, page.template_id), rows)
    by_name = {r.name: r for r in rows}
    send_back: dict[str, list[str]] = {}
    for p in problems:
        if not _sent_back_before(by_name[p.field]):
            send_back.setdefault(p.field, []).append(p.note)
    if send_back:
        notes = {name: "; ".join(dict.fromkeys(ns)) for name, ns in send_back.items()}
        ids = {name: int(by_name[name].id) for name in notes}
        return AssemblyOutcome(page_id, "send_back", sent_back=notes, field_ids=ids)
    if not _write_record(db, page_id, page.batch_id, rows, problems):
        return AssemblyOutcome(page_id, "not_ready")
    return AssemblyOutcome(page_id, "assembled", flagged=tuple(problems))


def _write_record(
    db: Engine, page_id: int, batch_id: str, rows: list[Row[Any]], problems: list[Problem]
) -> bool:
    data = {r.name: _cell(r, problems) for r in rows}
    payload = json.dumps(data, ensure_ascii=False, sort_keys=True)
    f, rec = schema.fields, schema.records
    with db.begin() as conn:
        # Fields may have been reopened since they were read: write only a still-settled page.
        still_open = conn.execute(
            select(func.count())
            .select_from(f)
            .where(f.c.page_id == page_id, f.c.status.not_in(SETTLED))
        ).scalar_one()
        if still_open:
            return False
        updated = conn.execute(
            rec.update().where(rec.c.page_id == page_id).values(data=payload, assembled_at=utcnow())
        ).rowcount
        if not updated:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(rec).values(
                            page_id=page_id, batch_id=batch_id, data=payload, assembled_at=utcnow()
                        )
                    )
            except IntegrityError:
                # A concurrent reassembly of the same page inserted first: same data, update.
                conn.execute(
                    rec.update()
                    .where(rec.c.page_id == page_id)
                    .values(data=payload, assembled_at=utcnow())
                )
        conn.execute(
            schema.pages.update()
            .where(schema.pages.c.id == page_id, schema.pages.c.status.in_(ASSEMBLED_FROM))
            .values(status=PageStatus.COMPLETE)
        )
        _copy_to_duplicates(conn, page_id, payload)
    return True


def _copy_to_duplicates(conn: Connection, page_id: int, payload: str) -> None:
    """Write the record of every page linked to this one (the same scan page submitted
    again by its agency, kerani.ingest.batches), in the same transaction."""
    p, rec = schema.pages, schema.records
    linked = conn.execute(
        select(p.c.id, p.c.batch_id).where(
            p.c.duplicate_of == page_id, p.c.status == PageStatus.DUPLICATE
        )
    ).all()
    for page in linked:
        done = conn.execute(
            rec.update().where(rec.c.page_id == page.id).values(data=payload, assembled_at=utcnow())
        ).rowcount
        if not done:
            conn.execute(
                insert(rec).values(
                    page_id=page.id, batch_id=page.batch_id, data=payload, assembled_at=utcnow()
                )
            )


def withdraw_record(db: Engine, page_id: int) -> None:
    """Delete a page's record (and its linked pages' copies): fields were sent back, it
    returns when they settle again."""
    p, rec = schema.pages, schema.records
    linked = select(p.c.id).where(p.c.duplicate_of == page_id)
    with db.begin() as conn:
        conn.execute(rec.delete().where(or_(rec.c.page_id == page_id, rec.c.page_id.in_(linked))))


def pages_to_reassemble(db: Engine, batch_id: str | None = None) -> list[int]:
    """Pages whose fields are all settled but that have no record: missed or new triggers."""
    p, f, r = schema.pages, schema.fields, schema.records
    open_fields = (
        select(func.count())
        .select_from(f)
        .where(f.c.page_id == p.c.id, f.c.status.not_in(SETTLED))
        .scalar_subquery()
    )
    has_record = select(r.c.id).where(r.c.page_id == p.c.id).exists()
    query = select(p.c.id).where(
        open_fields == 0,
        or_(p.c.status == PageStatus.ROUTED, (p.c.status == PageStatus.COMPLETE) & ~has_record),
    )
    if batch_id is not None:
        query = query.where(p.c.batch_id == batch_id)
    with db.connect() as conn:
        return [int(i) for i in conn.execute(query.order_by(p.c.id)).scalars()]
