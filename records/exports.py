"""Exports per batch: CSV, Parquet and JSON Lines via pandas, one row per document of the batch.

Every page of the batch is a row, whatever became of it, and so is every file or range of
pages refused at ingest: `status` says `done` (its record is assembled), `waiting` (fields
still with people: `waiting_fields` says how many; empty while the OCR has not read it),
`failed` (the OCR could not read it: `failure_reason`), `rejected` (refused at ingest:
`failure_reason`; `page` empty for a whole file or a range) or `gold` (made known answers
that test workers). A page read again from an earlier one (a duplicate) is like any page:
done once it has its record. Each row carries its provenance: the file's name (`document`),
its page number and the SHA-256 of the original file's bytes (`sha256`).

Every field has six columns: `<field>` (the value as settled), `<field>__normalised` (in a
standard form: ISO 8601 dates, decimal amounts, MyKad numbers without dashes; see
kerani.records.dictionary), `<field>__status` (`value`, `unreadable` or `blank`: a field
people could not read is marked, never silently empty; `waiting` while people have not
settled it), `<field>__source` (`ocr`, `human`, `arbitrated` or `gold`),
`<field>__agreement` (share of the evidence that agreed) and `<field>__people` (how many
people answered it). A waiting page shows the values already settled on it, which a rule
may still send back before its record is built; its `valid` stays empty until then. A done
row also says whether the record passed every rule (`valid`), which rules it still breaks
after arbitration (`problems`), and where the page's hOCR text layer is (`text_layer`).

Beside the records: the data dictionary (`dictionary.json`, `dictionary.csv`) and the audit
trail of every reading and answer (`audit.csv`, kerani.records.audit_trail).

In the CSV files a text cell that a spreadsheet would run as a formula is neutralised with a
leading `'` (see CSV_NOTE); `read_export` takes it off again, so every format reads back to
the same frame. The files depend only on the database, in a fixed order, so exporting again
gives the same bytes.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Row, func, select

from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.vocabulary import FieldStatus, PageStatus, ScanStatus, ValueKind
from kerani.forms.catalogue import template_of
from kerani.forms.templates import Template
from kerani.records import dictionary as dictionary_
from kerani.records.archive import hocr_key
from kerani.records.audit_trail import AUDIT_COLUMNS, audit_frame, read_as
from kerani.records.report import batch_refusals
from kerani.storage import schema
from kerani.storage.blobs import BlobStore

FORMATS = ("csv", "parquet", "jsonl")
# The deliverables beside the records, by name in ExportResult.keys.
DELIVERABLES = {
    "dictionary": "dictionary.json",
    "dictionary_csv": "dictionary.csv",
    "audit": "audit.csv",
}
DELIVERABLE_LABELS = {
    "dictionary": "data dictionary",
    "dictionary_csv": "data dictionary (csv)",
    "audit": "audit trail",
}
# The same names as kerani.forms.templates.RESERVED_FIELD_NAMES, which no field may take.
RECORD_COLUMNS = {name: c.dtype for name, c in dictionary_.RECORD_COLUMNS.items()}
FIELD_SUFFIXES = {suffix: c.dtype for suffix, c in dictionary_.FIELD_SUFFIXES.items()}
# A field holds a value once the OCR was trusted, people settled it, or it is a known answer.
SETTLED = (FieldStatus.AUTO_ACCEPTED, FieldStatus.SETTLED, FieldStatus.GOLD)

CSV_NOTE = (
    "In the CSV files (records, audit, dictionary) a text cell that starts with =, +, -, @, "
    "a tab or a carriage return (after any apostrophes) gets one more ' in front, so that a "
    "spreadsheet shows it as text instead of running it as a formula (OWASP: CSV injection). "
    "A number such as -12.50 or +60123456789, and a lone - or +, are left as they are; "
    "number columns are never changed. kerani.records.exports.read_export takes the ' off "
    "again; Parquet and JSON Lines hold every value as typed."
)
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_HARMLESS = re.compile(r"[+-]?(?:[0-9][0-9,]*(?:\.[0-9]+)?|\.[0-9]+)?")


@dataclass(frozen=True)
class ExportResult:
    """Where a batch's exports were written, and how many documents and records they hold."""

    batch_id: str
    records: int  # rows whose record is assembled (status done)
    keys: dict[str, str]  # format or deliverable -> blob key
    statuses: dict[str, int] = field(default_factory=dict)  # rows by status

    @property
    def documents(self) -> int:
        """Every row: pages, and files or pages refused at ingest."""
        return sum(self.statuses.values())


def export_label(name: str) -> str:
    """How a user is told what a file of ExportResult.keys is: `records (csv)`, `audit trail`."""
    return DELIVERABLE_LABELS.get(name, f"records ({name})")


def export_key(batch_id: str, fmt: str) -> str:
    """The blob key of a batch's export in format `fmt`, or of a deliverable beside it."""
    return f"exports/{batch_id}/{DELIVERABLES.get(fmt, f'records.{fmt}')}"


def neutralise_cell(text: str) -> str:
    """A CSV text cell as a spreadsheet cannot run it: a formula's start gets a leading '."""
    if _FORMULA.match(text) and not _HARMLESS.fullmatch(text):
        return "'" + text
    return text


def restore_cell(text: str) -> str:
    """The text a neutralised CSV cell stood for (the inverse of neutralise_cell)."""
    if text.startswith("'") and _FORMULA.match(text, 1):
        return text[1:]
    return text


def _field_cells(name: str, cell: dict[str, Any], template: Template) -> dict[str, Any]:
    # kind: text, unreadable or blank once settled; `waiting` (from _unsettled_cells) before.
    kind = cell.get("kind") or ValueKind.TEXT
    agreement = cell.get("agreement")
    value = (cell.get("value") or None) if kind == ValueKind.TEXT else None
    return {
        name: value,
        f"{name}__normalised": dictionary_.normalised_value(template.spec(name), kind, value),
        f"{name}__status": "value" if kind == ValueKind.TEXT else str(kind),
        f"{name}__source": cell.get("source"),
        f"{name}__agreement": None if agreement is None else round(float(agreement), 4),
        f"{name}__people": int(cell.get("people", cell.get("answers")) or 0),
    }


def _unsettled_cells(fields: list[Row[Any]]) -> dict[str, dict[str, Any]]:
    """A page's fields as record cells: settled ones as reassembly would write them, the
    others marked waiting."""
    out: dict[str, dict[str, Any]] = {}
    for f in fields:
        settled = f.status in SETTLED
        out[f.name] = {
            "value": f.value if settled else None,
            "kind": (f.value_kind or ValueKind.TEXT) if settled else "waiting",
            "source": f.source if settled else None,
            "agreement": f.agreement if settled else None,
            "people": int(f.people or 0),
        }
    return out


def column_types(frame_columns: list[str]) -> dict[str, str]:
    """The pandas dtype of each export column, from its name."""
    types: dict[str, str] = {}
    for col in frame_columns:
        if col in RECORD_COLUMNS:
            types[col] = RECORD_COLUMNS[col]
            continue
        suffix = next((s for s in FIELD_SUFFIXES if s and col.endswith(s)), "")
        types[col] = FIELD_SUFFIXES[suffix]
    return types


def _row(batch_id: str, document: str, page: int | None, sha256: str | None) -> dict[str, Any]:
    """A row's own columns: where it comes from, the rest empty until its status says."""
    where = {"batch_id": batch_id, "document": document, "page": page, "sha256": sha256}
    return dict.fromkeys(RECORD_COLUMNS) | where


def records_frame(db: Engine, batch_id: str) -> pd.DataFrame:
    """One row per document of the batch (every page, every refused file or pages) with its
    status, provenance and the columns of every field."""
    r, p, s, f = schema.records, schema.pages, schema.scans, schema.fields
    a, t = schema.answers, schema.tasks
    with db.connect() as conn:
        batch = conn.execute(select(schema.batches).where(schema.batches.c.id == batch_id)).first()
        if batch is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        pages = conn.execute(
            select(
                p.c.id,
                p.c.page_index,
                p.c.status,
                p.c.error,
                s.c.filename,
                s.c.sha256,
                r.c.data,
            )
            .join(s, s.c.id == p.c.scan_id)
            .outerjoin(r, r.c.page_id == p.c.id)
            .where(p.c.batch_id == batch_id)
        ).all()
        # The fields of pages without a record: what is settled, and what still waits (people
        # counted as reassembly counts them for the record).
        people = (
            select(func.count(func.distinct(a.c.worker_id)))
            .join(t, t.c.id == a.c.task_id)
            .where(t.c.field_id == f.c.id)
            .scalar_subquery()
        )
        # A page repeated from an earlier batch (status duplicate) has no fields of its own:
        # those of the page it copies are its.
        open_fields = conn.execute(
            select(
                p.c.id.label("page_id"),
                f.c.name,
                f.c.status,
                f.c.value,
                f.c.value_kind,
                f.c.source,
                f.c.agreement,
                people.label("people"),
            )
            .select_from(p)
            .join(f, f.c.page_id == read_as(p))
            .outerjoin(r, r.c.page_id == p.c.id)
            .where(p.c.batch_id == batch_id, r.c.id.is_(None))
            .order_by(f.c.id)
        ).all()
        scans = conn.execute(
            select(s.c.filename, s.c.sha256, s.c.status).where(s.c.batch_id == batch_id)
        ).all()
    template = template_of(db, batch.template, batch.template_id)
    by_page: dict[int, list[Row[Any]]] = {}
    for x in open_fields:
        by_page.setdefault(int(x.page_id), []).append(x)
    # A form's fields, or a template-free page's key fields, then its lines (sorted).
    names = template.value_names()
    extra: set[str] = set()
    keyed: list[tuple[tuple[str, int, int], dict[str, Any]]] = []
    for pg in pages:
        rec = _row(batch_id, pg.filename, pg.page_index + 1, pg.sha256)
        cells: dict[str, dict[str, Any]] = {}
        mine = by_page.get(int(pg.id), [])
        if pg.data is not None:
            cells = json.loads(pg.data)
            problems = [
                f"{n}: {note}" for n in sorted(cells) for note in cells[n].get("problems", [])
            ]
            rec |= {
                "status": "done",
                "waiting_fields": 0,
                "valid": not problems,
                "problems": "; ".join(problems) or None,
                "text_layer": hocr_key(batch_id, pg.filename, pg.page_index + 1),
            }
        elif pg.status == PageStatus.OCR_FAILED:
            rec |= {"status": "failed", "failure_reason": pg.error or "could not be read"}
        else:
            cells = _unsettled_cells(mine)
            rec["status"] = "gold" if pg.status == PageStatus.GOLD else "waiting"
            # No fields yet: the OCR has not read the page, so how many will wait is unknown.
            rec["waiting_fields"] = sum(x.status not in SETTLED for x in mine) if mine else None
        extra.update(n for n in cells if n not in names)
        for name, cell in cells.items():
            rec.update(_field_cells(name, cell, template))
        keyed.append(((pg.filename, pg.page_index + 1, 1), rec))
    # Files and pages refused at ingest (the OCR's failures are pages, above).
    sha_of = {x.filename: x.sha256 for x in scans}
    for refusal in batch_refusals(db, batch_id):
        if refusal.kind == "unread":
            continue
        single = refusal.first_page is not None and refusal.first_page == refusal.last_page
        page = refusal.first_page if single else None
        # A range has no one page number: its reason names the pages, as the report does.
        ranged = refusal.first_page is not None and not single
        reason = f"{refusal.label}: {refusal.reason}" if ranged else refusal.reason
        rec = _row(batch_id, refusal.document, page, sha_of.get(refusal.document))
        rec |= {"status": "rejected", "failure_reason": reason}
        keyed.append(((refusal.document, refusal.first_page or 0, 0), rec))
    # A file taken in whose pages are not in the batch yet (its ingest is under way).
    with_pages = {pg.filename for pg in pages}
    for x in scans:
        if x.status == ScanStatus.ACCEPTED and x.filename not in with_pages:
            rec = _row(batch_id, x.filename, None, x.sha256) | {"status": "waiting"}
            keyed.append(((x.filename, 0, 2), rec))
    keyed.sort(key=lambda kr: kr[0])
    columns = list(RECORD_COLUMNS)
    for name in names + sorted(extra):
        columns += [f"{name}{suffix}" for suffix in FIELD_SUFFIXES]
    frame = pd.DataFrame([rec for _, rec in keyed], columns=columns, dtype=object)
    return frame.astype(column_types(columns))


def _csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every text cell neutralised (number and boolean columns as they are)."""
    out = frame.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.StringDtype):
            out[col] = out[col].map(neutralise_cell, na_action="ignore").astype("string")
    return out


def frame_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """Serialise an export frame as CSV (formula cells neutralised), Parquet or JSON Lines
    (deterministically)."""
    if fmt == "csv":
        return _csv_safe(frame).to_csv(index=False, lineterminator="\n").encode("utf-8")
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False, engine="pyarrow")
        return buf.getvalue()
    if fmt == "jsonl":
        text = frame.to_json(orient="records", lines=True, force_ascii=False, double_precision=15)
        return (text or "").encode("utf-8")
    raise BadInputError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")


def read_export(data: bytes, fmt: str, types: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Read an export back into the same columns and dtypes it was written from (`types`:
    the dtypes of another file's columns, such as AUDIT_COLUMNS'; default the records')."""
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    if fmt == "csv":
        header = pd.read_csv(io.BytesIO(data), nrows=0).columns.tolist()
        dtypes = dict(types) if types is not None else column_types(header)
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=dtypes,
            keep_default_na=False,
            na_values=[""],
        )
        for col in frame.columns:
            if dtypes.get(col) == "string":
                frame[col] = frame[col].map(restore_cell, na_action="ignore").astype("string")
        return frame
    if fmt == "jsonl":
        frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        dtypes = dict(types) if types is not None else column_types(frame.columns.tolist())
        return frame.astype(dtypes)
    raise BadInputError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")


def _template_version(db: Engine, template_id: int | None) -> dict[str, Any]:
    """The stored template version a batch was read with: its id, version and hash."""
    if template_id is None:
        return {"template_id": None, "version": None, "sha256": None}
    t = schema.templates
    with db.connect() as conn:
        row = conn.execute(select(t.c.version, t.c.sha256).where(t.c.id == template_id)).one()
    return {"template_id": int(template_id), "version": int(row.version), "sha256": row.sha256}


def export_batch(db: Engine, blobs: BlobStore, batch_id: str) -> ExportResult:
    """Write the batch's documents as CSV, Parquet and JSON Lines to the blob store, with
    their data dictionary (JSON and CSV) and audit trail (CSV)."""
    frame = records_frame(db, batch_id)
    keys = {fmt: export_key(batch_id, fmt) for fmt in (*FORMATS, *DELIVERABLES)}
    for fmt in FORMATS:
        blobs.put(keys[fmt], frame_bytes(frame, fmt))
    blobs.put(keys["audit"], frame_bytes(audit_frame(db, batch_id), "csv"))
    with db.connect() as conn:
        batch = conn.execute(select(schema.batches).where(schema.batches.c.id == batch_id)).one()
    files = {name: key.rsplit("/", 1)[1] for name, key in keys.items()}
    meaning = dictionary_.batch_dictionary(
        template_of(db, batch.template, batch.template_id),
        _template_version(db, batch.template_id),
        batch_id,
        list(frame.columns),
        AUDIT_COLUMNS,
        files,
        CSV_NOTE,
    )
    text = json.dumps(meaning, ensure_ascii=False, indent=2) + "\n"
    blobs.put(keys["dictionary"], text.encode("utf-8"))
    flat = pd.DataFrame(
        dictionary_.dictionary_rows(meaning), columns=dictionary_.DICTIONARY_CSV_COLUMNS
    )
    flat = flat.astype({c: "boolean" if c == "required" else "string" for c in flat.columns})
    blobs.put(keys["dictionary_csv"], frame_bytes(flat, "csv"))
    statuses = {str(k): int(v) for k, v in frame["status"].value_counts(sort=False).items()}
    return ExportResult(
        batch_id=batch_id,
        records=statuses.get("done", 0),
        keys=keys,
        statuses=dict(sorted(statuses.items())),
    )
