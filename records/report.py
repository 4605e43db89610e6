"""The batch report for the agency: counts, accuracy indicators, cost, unreadable fields.

Accuracy here is what can be known without ground truth: how much was trusted to the
machine, how much people agreed, how many values broke a rule and went back. The figures
against known truth come from the benchmark harness, not from this report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select

from kerani.core.errors import NotFoundError
from kerani.core.vocabulary import AnswerKind, FieldStatus, PageStatus, ValueKind, ValueSource
from kerani.microtasks.ledger import ringgit, ringgit_each
from kerani.storage import schema

LOW_AGREEMENT = 0.75  # below this, people (and the OCR) mostly disagreed about a field


@dataclass(frozen=True)
class UnreadField:
    """A field that people could not read, or a page the OCR could not open."""

    document: str
    page: int
    field: str
    kind: str  # unreadable | blank | page_failed
    source: str
    people: int


@dataclass(frozen=True)
class BatchReport:
    """Everything an agency needs to know about one batch, as plain values."""

    batch_id: str
    template: str
    pages: int
    pages_complete: int
    pages_failed: int
    pages_waiting: int
    records: int
    records_valid: int
    records_flagged: int
    fields: int
    auto_accepted: int
    settled_by_people: int
    arbitrated: int
    waiting_for_people: int
    sent_back_by_rules: int
    unreadable: int
    blank: int
    answers: int
    skips: int
    mean_agreement: float | None
    low_agreement: int
    cost_sen: int
    unread_fields: list[UnreadField] = field(default_factory=list)
    rules_broken: dict[str, int] = field(default_factory=dict)

    @property
    def share_auto_accepted(self) -> float:
        """Share of fields the machine settled alone."""
        return self.auto_accepted / self.fields if self.fields else 0.0

    @property
    def answers_per_human_field(self) -> float:
        """People's answers per field that went to people."""
        to_people = self.fields - self.auto_accepted
        return self.answers / to_people if to_people else 0.0

    @property
    def cost_per_field_sen(self) -> float:
        """Ledger cost spread over every field of the batch."""
        return self.cost_sen / self.fields if self.fields else 0.0

    @property
    def cost_per_record_sen(self) -> float:
        """Ledger cost per record built."""
        return self.cost_sen / self.records if self.records else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), derived figures included."""
        out = asdict(self)
        out["share_auto_accepted"] = round(self.share_auto_accepted, 4)
        out["answers_per_human_field"] = round(self.answers_per_human_field, 3)
        out["cost_per_field_sen"] = round(self.cost_per_field_sen, 2)
        out["cost_per_record_sen"] = round(self.cost_per_record_sen, 2)
        out["cost"] = ringgit(self.cost_sen)
        return out


def _cost_sen(conn: Any, batch_id: str) -> int:
    led, a, t, f, p = schema.ledger, schema.answers, schema.tasks, schema.fields, schema.pages
    tagged = conn.execute(
        select(func.coalesce(func.sum(led.c.amount_sen), 0)).where(led.c.batch_id == batch_id)
    ).scalar_one()
    # Entries written without a batch id still belong to the batch of the field answered.
    untagged = conn.execute(
        select(func.coalesce(func.sum(led.c.amount_sen), 0))
        .join(a, a.c.id == led.c.answer_id)
        .join(t, t.c.id == a.c.task_id)
        .join(f, f.c.id == t.c.field_id)
        .join(p, p.c.id == f.c.page_id)
        .where(led.c.batch_id.is_(None), p.c.batch_id == batch_id)
    ).scalar_one()
    return int(tagged) + int(untagged)


def batch_report(db: Engine, batch_id: str) -> BatchReport:
    """Gather the report of one batch from the database."""
    b, p, f, s, r = schema.batches, schema.pages, schema.fields, schema.scans, schema.records
    a, t = schema.answers, schema.tasks
    with db.connect() as conn:
        batch = conn.execute(select(b).where(b.c.id == batch_id)).first()
        if batch is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        pages = conn.execute(
            select(p.c.id, p.c.status, p.c.page_index, p.c.error, s.c.filename)
            .join(s, s.c.id == p.c.scan_id)
            .where(p.c.batch_id == batch_id)
            .order_by(s.c.filename, p.c.page_index)
        ).all()
        people = (
            select(func.count(func.distinct(a.c.worker_id)))
            .join(t, t.c.id == a.c.task_id)
            .where(t.c.field_id == f.c.id)
            .scalar_subquery()
        )
        fields = conn.execute(
            select(
                f.c.name,
                f.c.status,
                f.c.value_kind,
                f.c.source,
                f.c.agreement,
                f.c.validation_error,
                p.c.page_index,
                s.c.filename,
                people.label("people"),
            )
            .join(p, p.c.id == f.c.page_id)
            .join(s, s.c.id == p.c.scan_id)
            .where(p.c.batch_id == batch_id)
            .order_by(s.c.filename, p.c.page_index, f.c.id)
        ).all()
        answer_kinds: dict[str, int] = dict(
            conn.execute(
                select(a.c.kind, func.count())
                .join(t, t.c.id == a.c.task_id)
                .join(f, f.c.id == t.c.field_id)
                .join(p, p.c.id == f.c.page_id)
                .where(p.c.batch_id == batch_id)
                .group_by(a.c.kind)
            )
            .tuples()
            .all()
        )
        records = conn.execute(select(r.c.data).where(r.c.batch_id == batch_id)).scalars().all()
        cost = _cost_sen(conn, batch_id)

    flagged = 0
    rules: dict[str, int] = {}
    for data in records:
        notes = [n for cell in json.loads(data).values() for n in cell.get("problems", [])]
        flagged += bool(notes)
    for row in fields:
        if row.validation_error:
            for note in str(row.validation_error).split("; "):
                rule = note.split(":", 1)[0]
                rules[rule] = rules.get(rule, 0) + 1
    unread = [
        UnreadField(x.filename, x.page_index + 1, "(whole page)", "page_failed", ValueSource.OCR, 0)
        for x in pages
        if x.status == PageStatus.OCR_FAILED
    ]
    unread += [
        UnreadField(x.filename, x.page_index + 1, x.name, "unreadable", str(x.source), x.people)
        for x in fields
        if x.value_kind == ValueKind.UNREADABLE
        and x.status in (FieldStatus.SETTLED, FieldStatus.AUTO_ACCEPTED)
    ]
    by_people = [x for x in fields if x.status == FieldStatus.SETTLED]
    agreements = [float(x.agreement) for x in by_people if x.agreement is not None]
    return BatchReport(
        batch_id=batch_id,
        template=str(batch.template),
        pages=len(pages),
        pages_complete=sum(x.status == PageStatus.COMPLETE for x in pages),
        pages_failed=sum(x.status == PageStatus.OCR_FAILED for x in pages),
        pages_waiting=sum(
            x.status not in (PageStatus.COMPLETE, PageStatus.OCR_FAILED) for x in pages
        ),
        records=len(records),
        records_valid=len(records) - flagged,
        records_flagged=flagged,
        fields=len(fields),
        auto_accepted=sum(x.status == FieldStatus.AUTO_ACCEPTED for x in fields),
        settled_by_people=len(by_people),
        arbitrated=sum(x.source == ValueSource.ARBITRATED for x in by_people),
        waiting_for_people=sum(
            x.status in (FieldStatus.PENDING, FieldStatus.IN_REVIEW) for x in fields
        ),
        sent_back_by_rules=sum(bool(x.validation_error) for x in fields),
        unreadable=sum(x.value_kind == ValueKind.UNREADABLE for x in fields),
        blank=sum(x.value_kind == ValueKind.BLANK for x in fields),
        answers=sum(n for k, n in answer_kinds.items() if k != AnswerKind.SKIP),
        skips=answer_kinds.get(AnswerKind.SKIP, 0),
        mean_agreement=round(sum(agreements) / len(agreements), 4) if agreements else None,
        low_agreement=sum(v < LOW_AGREEMENT for v in agreements),
        cost_sen=cost,
        unread_fields=unread,
        rules_broken=dict(sorted(rules.items())),
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def report_markdown(report: BatchReport) -> str:
    """The report as Markdown (for the Prefect artifact and the CLI)."""
    rp = report
    agreement = "–" if rp.mean_agreement is None else _pct(rp.mean_agreement)
    lines = [
        f"# Batch {rp.batch_id[:12]} ({rp.template})",
        "",
        "| | count |",
        "|---|---:|",
        f"| pages | {rp.pages} |",
        f"| pages complete | {rp.pages_complete} |",
        f"| pages waiting for people | {rp.pages_waiting} |",
        f"| pages that could not be read | {rp.pages_failed} |",
        f"| records | {rp.records} |",
        f"| records passing every rule | {rp.records_valid} |",
        f"| records kept with a broken rule after arbitration | {rp.records_flagged} |",
        f"| fields | {rp.fields} |",
        f"| fields auto-accepted (OCR) | {rp.auto_accepted} ({_pct(rp.share_auto_accepted)}) |",
        f"| fields settled by people | {rp.settled_by_people} |",
        f"| fields arbitrated by trusted workers | {rp.arbitrated} |",
        f"| fields waiting for people | {rp.waiting_for_people} |",
        f"| fields sent back by a rule | {rp.sent_back_by_rules} |",
        f"| fields unreadable | {rp.unreadable} |",
        f"| fields blank | {rp.blank} |",
        "",
        "## Accuracy indicators",
        "",
        f"- answers per field sent to people: {rp.answers_per_human_field:.2f} "
        f"({rp.answers} answers, {rp.skips} skips)",
        f"- mean agreement on fields settled by people: {agreement}",
        f"- fields settled with agreement below {_pct(LOW_AGREEMENT)}: {rp.low_agreement}",
        "",
        "## Cost (from the ledger)",
        "",
        f"- total paid to workers: {ringgit(rp.cost_sen)}",
        f"- per record ({rp.records} built): {ringgit_each(rp.cost_sen, rp.records)}",
        f"- per field ({rp.fields}, auto-accepted ones included): "
        f"{ringgit_each(rp.cost_sen, rp.fields)}",
    ]
    if rp.rules_broken:
        lines += ["", "## Rules that sent fields back", "", "| rule | fields |", "|---|---:|"]
        lines += [f"| {rule} | {n} |" for rule, n in rp.rules_broken.items()]
    lines += ["", "## Fields that could not be read", ""]
    if rp.unread_fields:
        lines += ["| document | page | field | people |", "|---|---:|---|---:|"]
        lines += [f"| {u.document} | {u.page} | {u.field} | {u.people} |" for u in rp.unread_fields]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"
