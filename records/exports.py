"""Exports per batch: CSV, Parquet and JSON Lines via pandas, one row per record.

Every field has five columns: `<field>` (the value), `<field>__status` (`value`,
`unreadable` or `blank`: a field people could not read is marked, never silently empty),
`<field>__source` (`ocr`, `human` or `arbitrated`), `<field>__agreement` (share of the
evidence that agreed) and `<field>__people` (how many people answered it). Each row also
says whether the record passed every rule (`valid`), which rules it still breaks after
arbitration (`problems`), and where the page's hOCR text layer is (`text_layer`).

The files depend only on the records, in a fixed order, so exporting again gives the same
bytes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.vocabulary import ValueKind
from kerani.forms.catalogue import template_of
from kerani.records.archive import hocr_key
from kerani.storage import schema
from kerani.storage.blobs import BlobStore

FORMATS = ("csv", "parquet", "jsonl")
# The same names as kerani.forms.templates.RESERVED_FIELD_NAMES, which no field may take.
RECORD_COLUMNS = {
    "batch_id": "string",
    "document": "string",
    "page": "Int64",
    "valid": "boolean",
    "problems": "string",
    "text_layer": "string",
}
FIELD_SUFFIXES = {
    "": "string",
    "__status": "string",
    "__source": "string",
    "__agreement": "Float64",
    "__people": "Int64",
}


@dataclass(frozen=True)
class ExportResult:
    """Where a batch's exports were written, and how many records they hold."""

    batch_id: str
    records: int
    keys: dict[str, str]  # format -> blob key


def export_key(batch_id: str, fmt: str) -> str:
    """The blob key of a batch's export in format `fmt`."""
    return f"exports/{batch_id}/records.{fmt}"


def _field_cells(name: str, cell: dict[str, Any]) -> dict[str, Any]:
    kind = cell.get("kind") or ValueKind.TEXT
    agreement = cell.get("agreement")
    return {
        name: (cell.get("value") or None) if kind == ValueKind.TEXT else None,
        f"{name}__status": "value" if kind == ValueKind.TEXT else str(kind),
        f"{name}__source": cell.get("source"),
        f"{name}__agreement": None if agreement is None else round(float(agreement), 4),
        f"{name}__people": int(cell.get("people", cell.get("answers")) or 0),
    }


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


def records_frame(db: Engine, batch_id: str) -> pd.DataFrame:
    """One row per record of the batch, with the provenance columns of every field."""
    r, p, s = schema.records, schema.pages, schema.scans
    with db.connect() as conn:
        batch = conn.execute(select(schema.batches).where(schema.batches.c.id == batch_id)).first()
        if batch is None:
            raise NotFoundError(f"no batch {batch_id!r}")
        rows = conn.execute(
            select(r.c.data, p.c.id, p.c.page_index, s.c.filename)
            .join(p, p.c.id == r.c.page_id)
            .join(s, s.c.id == p.c.scan_id)
            .where(r.c.batch_id == batch_id)
            .order_by(s.c.filename, p.c.page_index, p.c.id)
        ).all()
    template = template_of(db, batch.template, batch.template_id)
    # A form's fields, or a template-free page's key fields, then its lines (sorted).
    names = template.value_names()
    extra: set[str] = set()
    out = []
    for row in rows:
        data: dict[str, dict[str, Any]] = json.loads(row.data)
        extra.update(n for n in data if n not in names)
        problems = [f"{n}: {note}" for n in sorted(data) for note in data[n].get("problems", [])]
        rec: dict[str, Any] = {
            "batch_id": batch_id,
            "document": row.filename,
            "page": row.page_index + 1,
            "valid": not problems,
            "problems": "; ".join(problems) or None,
            "text_layer": hocr_key(batch_id, row.filename, row.page_index + 1),
        }
        for name, cell in data.items():
            rec.update(_field_cells(name, cell))
        out.append(rec)
    columns = list(RECORD_COLUMNS)
    for name in names + sorted(extra):
        columns += [f"{name}{suffix}" for suffix in FIELD_SUFFIXES]
    frame = pd.DataFrame(out, columns=columns, dtype=object)
    return frame.astype(column_types(columns))


def frame_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """Serialise an export frame as CSV, Parquet or JSON Lines (deterministically)."""
    if fmt == "csv":
        return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False, engine="pyarrow")
        return buf.getvalue()
    if fmt == "jsonl":
        text = frame.to_json(orient="records", lines=True, force_ascii=False, double_precision=15)
        return (text or "").encode("utf-8")
    raise BadInputError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")


def read_export(data: bytes, fmt: str) -> pd.DataFrame:
    """Read an export back into the same columns and dtypes it was written from."""
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    if fmt == "csv":
        header = pd.read_csv(io.BytesIO(data), nrows=0).columns.tolist()
        types = column_types(header)
        return pd.read_csv(
            io.BytesIO(data),
            dtype=types,
            keep_default_na=False,
            na_values=[""],
        )
    if fmt == "jsonl":
        frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        return frame.astype(column_types(frame.columns.tolist()))
    raise BadInputError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")


def export_batch(db: Engine, blobs: BlobStore, batch_id: str) -> ExportResult:
    """Write the batch's records as CSV, Parquet and JSON Lines to the blob store."""
    frame = records_frame(db, batch_id)
    keys = {fmt: export_key(batch_id, fmt) for fmt in FORMATS}
    for fmt, key in keys.items():
        blobs.put(key, frame_bytes(frame, fmt))
    return ExportResult(batch_id=batch_id, records=len(frame), keys=keys)
