"""The batch report for the agency: counts, accuracy indicators, cost, unreadable fields.

Accuracy here is what can be known without ground truth: how much was trusted to the
machine, how much people agreed, how many values broke a rule and went back, and each
source's estimated accuracy with its interval (records.accuracy). The figures against
known truth come from the benchmark harness, not from this report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import Engine, Row, func, select

from kerani.core.errors import NotFoundError
from kerani.core.text import pages_label, split_pages_label, visible
from kerani.core.vocabulary import (
    AnswerKind,
    FieldStatus,
    PageStatus,
    ScanStatus,
    ValueKind,
    ValueSource,
)
from kerani.microtasks.ledger import ringgit, ringgit_each
from kerani.records.accuracy import (
    NOT_ENOUGH,
    SourceEstimate,
    prefilled_confirmations,
    source_estimates,
)
from kerani.records.progress import failed_pages
from kerani.storage import schema

LOW_AGREEMENT = 0.75  # below this, people (and the OCR) mostly disagreed about a field


@dataclass(frozen=True)
class UnreadField:
    """A field that people could not read, or a page the OCR could not open."""

    document: str
    page: int
    field: str
    kind: str  # unreadable | blank
    source: str
    people: int


@dataclass(frozen=True)
class Refusal:
    """A file or pages of one that were not taken, or a page the OCR could not read; and why.

    `first_page` is None for a whole file; `last_page` None (with a first page) means to the
    file's end. `kind` is `file` or `pages` (refused at ingest) or `unread` (taken, not read).
    """

    document: str
    first_page: int | None
    last_page: int | None
    kind: Literal["file", "pages", "unread"]
    reason: str

    @property
    def label(self) -> str:
        """The file's name, with the pages when it is not the whole file."""
        if self.first_page is None:
            return self.document
        return pages_label(self.document, self.first_page, self.last_page)

    @property
    def page_count(self) -> int | None:
        """How many pages this is about (None for a whole file or an open-ended range)."""
        if self.first_page is None or self.last_page is None:
            return None
        return self.last_page - self.first_page + 1


@dataclass(frozen=True)
class BatchReport:
    """Everything an agency needs to know about one batch, as plain values."""

    batch_id: str
    template: str
    pages: int
    pages_complete: int
    pages_failed: int
    pages_waiting: int
    # Pages of scans the agency had sent in an earlier batch: not read again, their
    # records copied from there (counted among complete or waiting too).
    pages_linked: int
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
    # Fields waiting for people that staff settled instead, keying them twice (source gold).
    keyed_by_staff: int = 0
    # Each source's estimated accuracy (records.accuracy), in ValueSource order.
    sources: list[SourceEstimate] = field(default_factory=list)
    # Settled fields whose winning answers include a confirmation of the pre-filled guess.
    prefilled_confirmations: int = 0
    # Files and pages refused at ingest, and pages the OCR could not read, with the reasons.
    refused: list[Refusal] = field(default_factory=list)

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
        out["cost_per_record"] = _ringgit_sen(self.cost_sen, self.records)
        return out


def _cost_sen(conn: Any, batch_id: str) -> int:
    # Held pay is a cost (owed unless the worker is found out); voided pay is not.
    led, a, t, f, p = schema.ledger, schema.answers, schema.tasks, schema.fields, schema.pages
    tagged = conn.execute(
        select(func.coalesce(func.sum(led.c.amount_sen), 0)).where(
            led.c.batch_id == batch_id, led.c.status != "voided"
        )
    ).scalar_one()
    # Entries written without a batch id still belong to the batch of the field answered.
    untagged = conn.execute(
        select(func.coalesce(func.sum(led.c.amount_sen), 0))
        .join(a, a.c.id == led.c.answer_id)
        .join(t, t.c.id == a.c.task_id)
        .join(f, f.c.id == t.c.field_id)
        .join(p, p.c.id == f.c.page_id)
        .where(led.c.batch_id.is_(None), p.c.batch_id == batch_id, led.c.status != "voided")
    ).scalar_one()
    return int(tagged) + int(untagged)


def batch_refusals(db: Engine, batch_id: str) -> list[Refusal]:
    """Every file and page of a batch that was refused or could not be read, with the reason,
    in file and page order."""
    s = schema.scans
    with db.connect() as conn:
        rejected = conn.execute(
            select(s.c.filename, s.c.error, s.c.sha256, s.c.blob_key).where(
                s.c.batch_id == batch_id, s.c.status == ScanStatus.REJECTED
            )
        ).all()
        unread = failed_pages(conn, batch_id)
    out: list[Refusal] = []
    for row in rejected:
        reason = str(row.error or "refused")
        # Refused pages (kerani.ingest.batches) keep their file's hash and have no blob.
        split = split_pages_label(row.filename) if row.sha256 and not row.blob_key else None
        if split is None:
            out.append(Refusal(str(row.filename), None, None, "file", reason))
        else:
            out.append(Refusal(split[0], split[1], split[2], "pages", reason))
    out += [
        Refusal(
            str(x.filename),
            x.page_index + 1,
            x.page_index + 1,
            "unread",
            str(x.error or "could not be read"),
        )
        for x in unread
    ]
    out.sort(key=lambda r: (r.document, r.first_page or 0, r.kind))
    return out


def _complete(page: Row[Any]) -> bool:
    # A linked page is complete once its earlier page's record is copied to it.
    return bool(
        page.status == PageStatus.COMPLETE
        or (page.status == PageStatus.DUPLICATE and page.has_record)
    )


def batch_report(db: Engine, batch_id: str) -> BatchReport:
    """Gather the report of one batch from the database."""
    b, p, f, s, r = schema.batches, schema.pages, schema.fields, schema.scans, schema.records
    a, t = schema.answers, schema.tasks
    with db.connect() as conn:
        batch = conn.execute(select(b).where(b.c.id == batch_id)).first()
        if batch is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        has_record = select(r.c.id).where(r.c.page_id == p.c.id).exists()
        pages = conn.execute(
            select(
                p.c.id,
                p.c.status,
                p.c.page_index,
                p.c.error,
                s.c.filename,
                has_record.label("has_record"),
            )
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
    # A page the OCR could not read is listed with its reason among the refusals, not here.
    unread = [
        UnreadField(x.filename, x.page_index + 1, x.name, "unreadable", str(x.source), x.people)
        for x in fields
        if x.value_kind == ValueKind.UNREADABLE
        and x.status in (FieldStatus.SETTLED, FieldStatus.AUTO_ACCEPTED)
    ]
    settled = [x for x in fields if x.status == FieldStatus.SETTLED]
    # Staff settle a field by keying it twice (source gold): that is not the crowd's work.
    by_people = [x for x in settled if x.source != ValueSource.GOLD]
    agreements = [float(x.agreement) for x in by_people if x.agreement is not None]
    return BatchReport(
        batch_id=batch_id,
        template=str(batch.template),
        pages=len(pages),
        pages_complete=sum(_complete(x) for x in pages),
        pages_failed=sum(x.status == PageStatus.OCR_FAILED for x in pages),
        pages_waiting=sum(not _complete(x) and x.status != PageStatus.OCR_FAILED for x in pages),
        pages_linked=sum(x.status == PageStatus.DUPLICATE for x in pages),
        records=len(records),
        records_valid=len(records) - flagged,
        records_flagged=flagged,
        fields=len(fields),
        auto_accepted=sum(x.status == FieldStatus.AUTO_ACCEPTED for x in fields),
        settled_by_people=len(by_people),
        arbitrated=sum(x.source == ValueSource.ARBITRATED for x in by_people),
        keyed_by_staff=len(settled) - len(by_people),
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
        sources=source_estimates(db, batch_id=batch_id),
        prefilled_confirmations=prefilled_confirmations(db, batch_id=batch_id),
        refused=batch_refusals(db, batch_id),
    )


# The characters that start markup inside a line or a table cell (emphasis, code, links,
# HTML, entities, strike-through, cell breaks); a backslash makes each literal.
_MARKDOWN_SPECIAL = frozenset("\\`*_[]<>|~&")

SOURCE_LABELS = {
    ValueSource.OCR: "auto-accepted (OCR)",
    ValueSource.HUMAN: "settled by agreeing workers",
    ValueSource.ARBITRATED: "arbitrated by trusted workers",
    ValueSource.GOLD: "keyed twice by staff (gold)",
}


def markdown_text(text: object) -> str:
    """`text` as literal Markdown: special characters escaped, control characters written
    out, one line (a file name, a rule, typed text)."""
    flat = visible(" ".join(str(text).split()))
    return "".join(f"\\{c}" if c in _MARKDOWN_SPECIAL else c for c in flat)


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _share(x: float) -> str:
    """A share near one keeps enough digits not to read as 100% when it is not."""
    for digits in (1, 2):
        text = f"{100 * x:.{digits}f}"
        if x >= 1.0 or float(text) < 100.0:
            return f"{text}%"
    return ">99.99%"


def _ringgit_sen(total_sen: int, count: int) -> str:
    """A share of a total in RM with two decimals, and in whole sen ("RM 5.97 (597 sen)")."""
    if count <= 0:
        return "–"
    each = total_sen / count
    return f"{ringgit(round(each))} ({each:.0f} sen)"


def _estimate_cell(e: SourceEstimate) -> str:
    if e.estimate is None or e.low is None or e.high is None:
        return NOT_ENOUGH if e.evidence.startswith(NOT_ENOUGH) else "not measured"
    return f"{_share(e.estimate)} (95% interval {_share(e.low)} to {_share(e.high)})"


def _evidence_cell(e: SourceEstimate) -> str:
    text = e.evidence.removeprefix(NOT_ENOUGH).lstrip(": ") or e.evidence
    return markdown_text(text)


def sources_markdown(report: BatchReport) -> list[str]:
    """The "Estimated accuracy by source" section: a table, and the confirmation label."""
    lines = ["## Estimated accuracy by source (without ground truth)", ""]
    shown = [e for e in report.sources if e.fields]
    if shown:
        lines += [
            "| source | fields | estimated share right | evidence |",
            "|---|---:|---|---|",
        ]
        lines += [
            f"| {SOURCE_LABELS.get(ValueSource(e.source), e.source)} | {e.fields} "
            f"| {_estimate_cell(e)} | {_evidence_cell(e)} |"
            for e in shown
        ]
    else:
        lines.append("No field has a value yet.")
    n = report.prefilled_confirmations
    lines += [
        "",
        f"- {n} {'field rests' if n == 1 else 'fields rest'} partly on a confirmation of "
        "the pre-filled OCR guess (a worker shown the guess answered the same value; "
        "a confirmation misses errors that blind keying catches)",
    ]
    return lines


def report_markdown(report: BatchReport) -> str:
    """The report as Markdown (for the Prefect artifact and the CLI)."""
    rp = report
    agreement = "–" if rp.mean_agreement is None else _pct(rp.mean_agreement)
    lines = [
        f"# Batch {rp.batch_id[:12]} ({markdown_text(rp.template)})",
        "",
        "| | count |",
        "|---|---:|",
        f"| pages | {rp.pages} |",
        f"| pages complete | {rp.pages_complete} |",
        f"| pages waiting for people | {rp.pages_waiting} |",
        f"| pages that could not be read | {rp.pages_failed} |",
        *(
            [f"| pages sent before in an earlier batch (not read again) | {rp.pages_linked} |"]
            if rp.pages_linked
            else []
        ),
        f"| records | {rp.records} |",
        f"| records passing every rule | {rp.records_valid} |",
        f"| records kept with a broken rule after arbitration | {rp.records_flagged} |",
        f"| fields | {rp.fields} |",
        f"| fields auto-accepted (OCR) | {rp.auto_accepted} "
        f"({_pct(rp.share_auto_accepted)} of fields) |",
        f"| fields settled by people (arbitrated ones included) | {rp.settled_by_people} |",
        f"| fields arbitrated by trusted workers | {rp.arbitrated} |",
        f"| fields keyed twice by staff | {rp.keyed_by_staff} |",
        f"| fields waiting for people | {rp.waiting_for_people} |",
        f"| fields sent back by a rule | {rp.sent_back_by_rules} |",
        f"| fields unreadable | {rp.unreadable} |",
        f"| fields blank | {rp.blank} |",
        "",
        *sources_markdown(rp),
        "",
        "## Accuracy indicators",
        "",
        f"- answers per field sent to people: {rp.answers_per_human_field:.2f} "
        f"({rp.answers} answers over {rp.fields - rp.auto_accepted} fields; "
        f"skips, not counted: {rp.skips})",
        "- mean share of votes agreeing with the settled value (the OCR's guess counted as "
        f"one vote), over the {rp.settled_by_people} fields settled by people: {agreement}",
        f"- fields settled by people with fewer than {_pct(LOW_AGREEMENT)} of votes agreeing: "
        f"{rp.low_agreement}",
        "",
        "## Cost (from the ledger)",
        "",
        f"- paid to workers in all: {ringgit(rp.cost_sen)}",
        f"- per record: {_ringgit_sen(rp.cost_sen, rp.records)} "
        f"over {_n(rp.records, 'record')} built"
        if rp.records
        else "- per record: – (no record built yet)",
        f"- per field: {ringgit_each(rp.cost_sen, rp.fields)} over {rp.fields} fields, "
        "auto-accepted ones included"
        if rp.fields
        else "- per field: – (no field yet)",
    ]
    if rp.rules_broken:
        lines += ["", "## Rules that sent fields back", "", "| rule | fields |", "|---|---:|"]
        lines += [f"| {markdown_text(rule)} | {n} |" for rule, n in rp.rules_broken.items()]
    lines += ["", "## Fields that could not be read", ""]
    if rp.unread_fields:
        lines += ["| document | page | field | people |", "|---|---:|---|---:|"]
        lines += [
            f"| {markdown_text(u.document)} | {u.page} | {markdown_text(u.field)} | {u.people} |"
            for u in rp.unread_fields
        ]
    else:
        lines.append("None.")
    lines += ["", "## Files and pages not taken, or not read by the OCR", ""]
    if rp.refused:
        lines += ["| document | pages | what happened | why |", "|---|---|---|---|"]
        lines += [
            f"| {markdown_text(r.document)} | {_pages_cell(r)} | {_REFUSAL_KINDS[r.kind]} "
            f"| {markdown_text(r.reason)} |"
            for r in rp.refused
        ]
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


_REFUSAL_KINDS = {
    "file": "file refused",
    "pages": "not taken",
    "unread": "not read by the OCR",
}


def _pages_cell(r: Refusal) -> str:
    if r.first_page is None:
        return "all"
    if r.last_page == r.first_page:
        return str(r.first_page)
    return f"{r.first_page}-{r.last_page}" if r.last_page else f"{r.first_page} and later"
