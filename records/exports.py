"""Exports per batch: CSV and JSON Lines via pandas, one row per record, provenance per field."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine, select

from kerani.exceptions import NotFoundError
from records.templates import load_template
from storage import schema
from storage.blobs import BlobStore


@dataclass(frozen=True)
class ExportResult:
    """Where a batch's exports were written, and how many records they hold."""

    batch_id: str
    records: int
    keys: dict[str, str]  # format -> blob key


def _source_label(cell: dict[str, object]) -> str:
    kind = cell.get("kind")
    source = str(cell.get("source"))
    # Unreadable or blank fields are marked as such, never left looking like an empty value.
    return source if kind == "text" else f"{source}:{kind}"


def records_frame(db: Engine, batch_id: str) -> pd.DataFrame:
    """One row per record of the batch: document, then `<field>` and `<field>__source` columns."""
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
            .order_by(s.c.filename, p.c.page_index)
        ).all()
    template = load_template(batch.template)
    out = []
    names: list[str] = [f.name for f in template.fields]
    for row in rows:
        data: dict[str, dict[str, object]] = json.loads(row.data)
        for name in sorted(data):
            if name not in names:
                names.append(name)
        rec: dict[str, object] = {
            "batch_id": batch_id,
            "document": row.filename,
            "page": row.page_index + 1,
        }
        for name, cell in data.items():
            rec[name] = cell.get("value")
            rec[f"{name}__source"] = _source_label(cell)
        out.append(rec)
    columns = ["batch_id", "document", "page"]
    for name in names:
        columns += [name, f"{name}__source"]
    return pd.DataFrame(out, columns=columns, dtype=object)


def export_batch(db: Engine, blobs: BlobStore, batch_id: str) -> ExportResult:
    """Write the batch's records as CSV and JSON Lines to the blob store."""
    frame = records_frame(db, batch_id)
    keys = {
        "csv": f"exports/{batch_id}/records.csv",
        "jsonl": f"exports/{batch_id}/records.jsonl",
    }
    blobs.put(keys["csv"], frame.to_csv(index=False).encode("utf-8"))
    buf = io.StringIO()
    frame.to_json(buf, orient="records", lines=True, force_ascii=False)
    blobs.put(keys["jsonl"], buf.getvalue().encode("utf-8"))
    return ExportResult(batch_id=batch_id, records=len(frame), keys=keys)
