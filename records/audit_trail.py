"""The audit trail of a batch's values, for the archive: `exports/<batch>/audit.csv`.

One line per piece of evidence on each field of the batch: every OCR engine's reading, every
answer a person gave (skips too) and every staff keying, in the order they came. A page
repeated from an earlier batch of its agency has the lines of the page it copies. Each line
also says how the field was settled in the end (`settled_how`: auto_accepted by the OCR,
consensus of people, arbitrated by a trusted worker, staff_keying, gold, or still waiting)
with the settled value, its agreement and posterior, and how many people opened the snippet.

People appear only by a pseudonym, `W<number>`: the number they sign in with, which the
operator can look up and nobody else can (names, roles and access codes never leave the
database). Values appear as typed, restricted fields' included: the batch's data belong to
the agency that submitted it, and its export carries those values already; `sensitivity`
lets the archive withhold them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, and_, case, func, select

from kerani.core.vocabulary import AuditAction, FieldStatus, TaskKind, ValueKind, ValueSource
from kerani.records.dictionary import Column
from kerani.storage import schema
from kerani.storage.database import as_utc

AUDIT_COLUMNS: dict[str, Column] = {
    "batch_id": Column("string", "text", "Batch", "Kelompok", "the batch's id"),
    "document": Column("string", "text", "File name", "Nama fail", "the original file's name"),
    "page": Column("Int64", "integer", "Page", "Halaman", "the page's number in its file"),
    "field": Column("string", "text", "Field", "Medan", "the field (its column in records)"),
    "field_type": Column("string", "text", "Field type", "Jenis medan", "the field's type"),
    "sensitivity": Column(
        "string", "text", "Sensitivity", "Kepekaan", "public, personal or restricted"
    ),
    "event": Column(
        "string",
        "text",
        "Event",
        "Peristiwa",
        "ocr (an engine's reading), answer (a person's) or staff_keying (staff keying the "
        "field blind for gold)",
    ),
    "at": Column("string", "text", "When", "Bila", "when, ISO 8601 in UTC"),
    "who": Column(
        "string",
        "text",
        "Who",
        "Siapa",
        "the OCR engine and version, or the person as W<number> (a pseudonym: the operator "
        "alone can tell who it is)",
    ),
    "task_kind": Column(
        "string",
        "text",
        "Asked as",
        "Ditanya sebagai",
        "field (an ordinary task), arbitration (a disputed field, trusted workers only) or "
        "gold (a test of the worker with a known answer; it settles nothing)",
    ),
    "kind": Column(
        "string",
        "text",
        "Answer kind",
        "Jenis jawapan",
        "value, unreadable, blank, or skip (passed on to others)",
    ),
    "value": Column("string", "text", "Value", "Nilai", "what the engine read or the person typed"),
    "confidence": Column(
        "Float64", "decimal", "OCR confidence", "Keyakinan OCR", "the engine's confidence, 0-100"
    ),
    "evidence": Column(
        "string",
        "text",
        "OCR evidence",
        "Bukti OCR",
        "how the reading was obtained (page, agree, reocr, disagree, ...)",
    ),
    "guess": Column(
        "boolean",
        "boolean",
        "The OCR's guess",
        "Tekaan OCR",
        "this reading was the guess routing judged and the review page pre-filled",
    ),
    "blind": Column(
        "boolean",
        "boolean",
        "Shown blind",
        "Dipaparkan tanpa tekaan",
        "the person was shown the snippet without the OCR's guess (empty: not recorded)",
    ),
    "duration_ms": Column(
        "Int64",
        "integer",
        "Time taken (ms)",
        "Masa diambil (ms)",
        "from showing the task to the answer, in milliseconds",
    ),
    "settled_how": Column(
        "string",
        "text",
        "Settled how",
        "Cara diputuskan",
        "auto_accepted (the OCR alone, by its calibrated confidence and evidence), consensus "
        "(people agreed), arbitrated (a trusted worker decided a dispute), staff_keying "
        "(staff keyed it twice alike), gold (a known answer), waiting (not settled yet)",
    ),
    "settled_kind": Column(
        "string",
        "text",
        "Settled kind",
        "Jenis keputusan",
        "value, unreadable or blank (empty while waiting)",
    ),
    "settled_value": Column(
        "string", "text", "Settled value", "Nilai diputuskan", "the field's value in the records"
    ),
    "agreement": Column(
        "Float64",
        "decimal",
        "Agreement",
        "Persetujuan",
        "share of the evidence that agreed with the settled value, 0 to 1",
    ),
    "posterior": Column(
        "Float64",
        "decimal",
        "Posterior",
        "Kebarangkalian posterior",
        "the settled value's probability under the consensus model, 0 to 1",
    ),
    "settled_at": Column(
        "string", "text", "Settled at", "Diputuskan pada", "when people settled it, ISO 8601 UTC"
    ),
    "viewers": Column(
        "Int64",
        "integer",
        "People who saw it",
        "Orang yang melihat",
        "how many people opened the field's snippet",
    ),
}
_EVENT_ORDER = {"ocr": 0, "answer": 1, "staff_keying": 1}
# How a field people settled got its value, by its source: staff settle a field by keying it
# twice alike (microtasks.gold); what else people settle, their consensus did.
_SETTLED_BY: dict[str, str] = {
    ValueSource.ARBITRATED: "arbitrated",
    ValueSource.GOLD: "staff_keying",
    ValueSource.OCR: "auto_accepted",
}


def read_as(p: Any) -> Any:
    """The page whose fields a page of `p` (schema.pages) has: its own, or, for a page
    repeated from an earlier batch of its agency (status duplicate), the page it copies."""
    return func.coalesce(p.c.duplicate_of, p.c.id)


def pseudonym(worker_id: int) -> str:
    """How a person is named in exports: W and their worker number, never their name."""
    return f"W{worker_id}"


def _when(value: datetime | None) -> str | None:
    # PostgreSQL hands back its session's time zone, SQLite naive UTC: both written in UTC.
    if value is None:
        return None
    return as_utc(value).astimezone(UTC).isoformat(timespec="milliseconds")


def _settled_how(status: str, source: str | None) -> str:
    if status == FieldStatus.GOLD:
        return "gold"
    if status == FieldStatus.AUTO_ACCEPTED:
        return "auto_accepted"
    if status != FieldStatus.SETTLED:
        return "waiting"
    return _SETTLED_BY.get(str(source), "consensus")


def _kind_name(kind: str | None) -> str | None:
    """A value kind as the exports say it: text is `value`."""
    if kind is None:
        return None
    return "value" if kind == ValueKind.TEXT else str(kind)


def audit_frame(db: Engine, batch_id: str) -> pd.DataFrame:
    """One row per OCR reading, answer and staff keying of every field of the batch."""
    f, p, s, t = schema.fields, schema.pages, schema.scans, schema.tasks
    a, led, r, k = schema.answers, schema.ledger, schema.ocr_readings, schema.gold_keyings
    log = schema.audit_log
    in_batch = p.c.batch_id == batch_id
    with db.connect() as conn:
        fields = conn.execute(
            select(
                f.c.id,
                f.c.name,
                f.c.kind,
                f.c.sensitivity,
                f.c.status,
                f.c.value,
                f.c.value_kind,
                f.c.source,
                f.c.agreement,
                f.c.posterior,
                p.c.page_index,
                s.c.filename,
                t.c.settled_at,
            )
            .join(p, read_as(p) == f.c.page_id)
            .join(s, s.c.id == p.c.scan_id)
            .outerjoin(t, t.c.field_id == f.c.id)
            .where(in_batch)
            .order_by(s.c.filename, p.c.page_index, f.c.id)
        ).all()
        readings = conn.execute(
            select(r)
            .join(f, f.c.id == r.c.field_id)
            .join(p, read_as(p) == f.c.page_id)
            .where(in_batch)
            .order_by(r.c.id)
        ).all()
        # Answers to a field's own task, and to gold tasks made of it (tests of the worker
        # who saw its snippet); the ledger says whether an answer was an arbitration.
        asked = func.coalesce(t.c.field_id, t.c.gold_field_id)
        unpaid_kind = case(
            (t.c.kind == TaskKind.GOLD, "gold"),
            (t.c.escalated, "arbitration"),
            else_="field",
        )
        answers = conn.execute(
            select(
                a.c.id,
                a.c.worker_id,
                a.c.kind,
                a.c.value,
                a.c.created_at,
                a.c.duration_ms,
                a.c.blind,
                asked.label("field_id"),
                func.coalesce(led.c.task_kind, unpaid_kind).label("task_kind"),
            )
            .join(t, t.c.id == a.c.task_id)
            .join(f, f.c.id == asked)
            .join(p, read_as(p) == f.c.page_id)
            .outerjoin(led, led.c.answer_id == a.c.id)
            .where(in_batch)
            .order_by(a.c.created_at, a.c.id)
        ).all()
        keyings = conn.execute(
            select(k)
            .join(f, f.c.id == k.c.field_id)
            .join(p, read_as(p) == f.c.page_id)
            .where(in_batch)
            .order_by(k.c.created_at, k.c.id)
        ).all()
        viewers = dict(
            conn.execute(
                select(log.c.field_id, func.count(func.distinct(log.c.worker_id)))
                .join(f, and_(f.c.id == log.c.field_id, log.c.action == AuditAction.VIEW))
                .join(p, read_as(p) == f.c.page_id)
                .where(in_batch)
                .group_by(log.c.field_id)
            )
            .tuples()
            .all()
        )
    events: dict[int, list[dict[str, Any]]] = {}
    for x in readings:
        events.setdefault(int(x.field_id), []).append(
            {
                "event": "ocr",
                "_at": x.created_at,
                "_id": x.id,
                "at": _when(x.created_at),
                "who": x.engine,
                "kind": "value",
                "value": x.text,
                "confidence": round(float(x.confidence), 2),
                "evidence": x.evidence,
                "guess": bool(x.is_guess),
            }
        )
    for x in answers:
        events.setdefault(int(x.field_id), []).append(
            {
                "event": "answer",
                "_at": x.created_at,
                "_id": x.id,
                "at": _when(x.created_at),
                "who": pseudonym(int(x.worker_id)),
                "task_kind": x.task_kind,
                "kind": x.kind,
                "value": x.value,
                "blind": x.blind,
                "duration_ms": x.duration_ms,
            }
        )
    for x in keyings:
        events.setdefault(int(x.field_id), []).append(
            {
                "event": "staff_keying",
                "_at": x.created_at,
                "_id": x.id,
                "at": _when(x.created_at),
                "who": pseudonym(int(x.keyer_id)),
                "task_kind": f"staff round {x.round}",
                "kind": x.kind,
                "value": x.value,
            }
        )
    rows = list(_rows(batch_id, fields, events, viewers))
    frame = pd.DataFrame(rows, columns=list(AUDIT_COLUMNS), dtype=object)
    return frame.astype({name: c.dtype for name, c in AUDIT_COLUMNS.items()})


def _rows(
    batch_id: str,
    fields: Iterable[Any],
    events: dict[int, list[dict[str, Any]]],
    viewers: dict[int, int],
) -> Iterable[dict[str, Any]]:
    for fd in fields:
        settled = _settled_how(fd.status, fd.source)
        waiting = settled == "waiting"
        common = {
            "batch_id": batch_id,
            "document": fd.filename,
            "page": fd.page_index + 1,
            "field": fd.name,
            "field_type": fd.kind,
            "sensitivity": fd.sensitivity,
            "settled_how": settled,
            "settled_kind": None if waiting else _kind_name(fd.value_kind),
            "settled_value": None if waiting or fd.value_kind != ValueKind.TEXT else fd.value,
            "agreement": None if fd.agreement is None else round(float(fd.agreement), 4),
            "posterior": None if fd.posterior is None else round(float(fd.posterior), 4),
            "settled_at": _when(fd.settled_at),
            "viewers": int(viewers.get(fd.id, 0)),
        }
        # The engines' readings first, then people's answers and staff keyings as they came.
        mine = sorted(
            events.get(int(fd.id), []),
            key=lambda e: (_EVENT_ORDER[e["event"]], e["_at"], e["event"], e["_id"]),
        )
        for e in mine:
            yield common | {key: v for key, v in e.items() if not key.startswith("_")}
