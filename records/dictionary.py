"""The data dictionary of a batch's exports, and the normalised form of each field's value.

Every column of `records.*` is described once here: its name, its label in English and
Bahasa Malaysia, its type, its sensitivity and what it means. A field's own columns take
their label, type, validators and sensitivity from the batch's stored template version, and
say how `<field>__normalised` is made from the raw value (`normalised_value`). The
dictionary is written beside the records as `exports/<batch>/dictionary.json` (complete,
nested) and `dictionary.csv` (one row per column, for a spreadsheet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kerani.core.vocabulary import Sensitivity, ValueKind
from kerani.forms.templates import LINE_NAME, Label, Template, ValueSpec
from kerani.forms.validators import CHECKBOX_VALUES, SIGNATURE_VALUES, parse_date
from kerani.microtasks.normalise import normalise_answer


@dataclass(frozen=True)
class Column:
    """What one export column holds: its pandas dtype, its kind of value, labels, meaning."""

    dtype: str  # pandas dtype: string | Int64 | Float64 | boolean (Parquet keeps it)
    type: str  # what a reader finds in it: text, integer, decimal, boolean, a field type
    en: str
    ms: str
    meaning: str
    sensitivity: str = Sensitivity.PUBLIC


# The page's own columns, in export order; kerani.forms.templates.RESERVED_FIELD_NAMES keeps
# fields from taking their names.
STATUSES = {
    "done": "its record is assembled (every field settled and checked)",
    "waiting": "taken in, its record not built yet: fields still with people "
    "(waiting_fields says how many), or not yet read by the OCR (waiting_fields empty)",
    "failed": "the OCR could not read the page (failure_reason says why)",
    "rejected": "the file or pages were refused at ingest (failure_reason says why); "
    "page is empty when the whole file was refused or a range of pages was",
    "gold": "its fields became known answers that test workers: it never becomes a record",
}
RECORD_COLUMNS: dict[str, Column] = {
    "batch_id": Column("string", "text", "Batch", "Kelompok", "the batch's id"),
    "document": Column(
        "string",
        "text",
        "File name",
        "Nama fail",
        "the original file's name as submitted (a path inside a zip or folder)",
        Sensitivity.PERSONAL,  # file names often carry a person's name
    ),
    "page": Column(
        "Int64",
        "integer",
        "Page",
        "Halaman",
        "the page's number in its file, from 1 (empty for a whole file or a range refused)",
    ),
    "sha256": Column(
        "string",
        "text",
        "SHA-256 of the file",
        "SHA-256 fail",
        "the SHA-256 of the original file's bytes, as kept untouched in the blob store "
        "(empty for a file that could not be read)",
    ),
    "status": Column(
        "string",
        "text",
        "Status",
        "Status",
        "one of: " + "; ".join(f"{k}: {v}" for k, v in STATUSES.items()),
    ),
    "waiting_fields": Column(
        "Int64",
        "integer",
        "Fields waiting for people",
        "Medan menunggu semakan",
        "how many of the page's fields are not settled yet (0 when done; empty when the "
        "page's fields are not known: not read yet, failed, rejected)",
    ),
    "failure_reason": Column(
        "string",
        "text",
        "Why it failed or was refused",
        "Sebab gagal atau ditolak",
        "why the OCR could not read the page, or why the file or pages were refused",
        Sensitivity.PERSONAL,  # a reason may name the file
    ),
    "valid": Column(
        "boolean",
        "boolean",
        "Passes every rule",
        "Lulus semua peraturan",
        "the record passes every validator and cross-field rule (empty until it is done)",
    ),
    "problems": Column(
        "string",
        "text",
        "Rules broken",
        "Peraturan dilanggar",
        "rules still broken after arbitration, as `field: rule: reason; ...`",
    ),
    "text_layer": Column(
        "string",
        "text",
        "Text layer (hOCR)",
        "Lapisan teks (hOCR)",
        "blob key of the page's hOCR file with the settled values (done pages only)",
    ),
}
# Each field's columns, in export order: the suffix after its name, and what it holds. The
# labels are the field's own, followed by these.
FIELD_SUFFIXES: dict[str, Column] = {
    "": Column(
        "string", "", "", "", "the value as settled (empty when there is none: see __status)"
    ),
    "__normalised": Column(
        "string", "", "(normalised)", "(dinormalkan)", "the value in a standard form"
    ),
    "__status": Column(
        "string",
        "text",
        "(status)",
        "(status)",
        "value, unreadable or blank once settled; waiting while people have not settled it",
    ),
    "__source": Column(
        "string",
        "text",
        "(source)",
        "(sumber)",
        "who settled it: ocr (auto-accepted), human (people agreed), arbitrated (a trusted "
        "worker decided) or gold (the known answer)",
    ),
    "__agreement": Column(
        "Float64",
        "decimal",
        "(agreement)",
        "(persetujuan)",
        "share of the evidence (the OCR's guess and people's answers) that agreed, 0 to 1",
    ),
    "__people": Column(
        "Int64",
        "integer",
        "(people)",
        "(bilangan orang)",
        "how many people answered the field",
    ),
}

# How `<field>__normalised` is made from the value, by field type; every type also leaves it
# empty when the field has no value (unreadable, blank, waiting).
NORMALISATION = {
    "date": "ISO 8601 date YYYY-MM-DD, read with the field's date formats ({formats}); "
    "empty when the value is not a real date in one of them",
    "amount": "decimal with a point and two places (RM 1,234.5 gives 1234.50): RM, spaces "
    "and thousands separators removed; empty when the value does not read as an amount",
    "ic_number": "the 12 digits of the MyKad number without dashes or spaces; empty when it "
    "is not 12 digits",
    "number": "the whole number in digits, without spaces or leading zeros; empty when it is "
    "not a whole number",
    "phone": "without spaces (dashes kept)",
    "postcode": "without spaces",
    "checkbox": f"lower case, one of {', '.join(CHECKBOX_VALUES)}; empty otherwise",
    "signature": f"lower case, one of {', '.join(SIGNATURE_VALUES)}; empty otherwise",
    "choice": "the allowed value it matches (any case), spelled as the template spells it; "
    "empty when it matches none",
    "text": "trimmed, each run of spaces made one",
}
_AMOUNT = re.compile(r"[0-9]+\.[0-9]{2}")
_IC_DIGITS = re.compile(r"[0-9]{12}")
_WHOLE = re.compile(r"[0-9]+")


def _read_formats(formats: list[str]) -> list[str]:
    """The field's date formats, and each with / for its separators: answers are compared
    (and stored) as microtasks.normalise writes dates, D.M.YYYY as DD/MM/YYYY."""
    slashed = [re.sub(r"[.\-]", "/", f) for f in formats]
    return list(dict.fromkeys([*formats, *slashed]))


def normalised_value(spec: ValueSpec | None, kind: str | None, value: str | None) -> str | None:
    """The value in the standard form of its field type (see NORMALISATION), or None when it
    has no value or cannot be read as its type; `spec` None is a template-free text line."""
    if (kind or ValueKind.TEXT) != ValueKind.TEXT or value is None or not value.strip():
        return None
    field_type = spec.type if spec is not None else "line"
    if field_type == "date" and spec is not None:
        day = parse_date(value, _read_formats(spec.formats))
        return day.isoformat() if day is not None else None
    # The same canonical forms consensus compares answers in: RM and thousands separators
    # out of amounts, IC numbers as YYMMDD-PB-NNNN, spaces out of phones and postcodes.
    canonical = normalise_answer(field_type, value)
    if field_type == "amount":
        return canonical if _AMOUNT.fullmatch(canonical) else None
    if field_type == "ic_number":
        digits = canonical.replace("-", "")
        return digits if _IC_DIGITS.fullmatch(digits) else None
    if field_type == "number":
        return str(int(canonical)) if _WHOLE.fullmatch(canonical) else None
    if field_type in ("checkbox", "signature"):
        allowed = CHECKBOX_VALUES if field_type == "checkbox" else SIGNATURE_VALUES
        return canonical.lower() if canonical.lower() in allowed else None
    if field_type == "choice" and spec is not None and spec.allowed:
        return next((a for a in spec.allowed if a.casefold() == canonical.casefold()), None)
    return canonical


def normalisation_of(spec: ValueSpec) -> str:
    """How a field's normalised column is made, in words."""
    how = NORMALISATION.get(spec.type, NORMALISATION["text"])
    return how.format(formats=", ".join(_read_formats(spec.formats)))


def _validators(spec: ValueSpec) -> dict[str, Any]:
    """The checks a field's value passes before its record is built, as the template says."""
    out: dict[str, Any] = {"required": spec.required}
    if spec.format_hint:
        out["format_hint"] = spec.format_hint
    if spec.pattern:
        out["pattern"] = spec.pattern
    if spec.type == "date":
        out["date_formats"] = spec.formats
    if spec.range is not None:
        out["range"] = {
            "min": _decimal_text(spec.range.min),
            "max": _decimal_text(spec.range.max),
        }
    if spec.allowed is not None:
        out["allowed"] = list(spec.allowed)
    if spec.checksum:
        out["checksum"] = spec.checksum
    return out


def _decimal_text(d: Decimal | None) -> str | None:
    return None if d is None else str(d)


def _spec_of(template: Template, name: str) -> tuple[ValueSpec, str]:
    """The spec of a field column (a text line's stand-in for a line) and its role."""
    spec = template.spec(name)
    if spec is not None:
        return spec, "key field" if template.kind == "lines" else "field"
    # A template-free page's text line (line_001, ...): free text, personal like any field
    # whose template says nothing (ocr.preocr gives lines that sensitivity).
    number = int(name.rsplit("_", 1)[1]) if LINE_NAME.fullmatch(name) else None
    label = (
        Label(en=f"Text line {number}", ms=f"Baris teks {number}")
        if number is not None
        else Label(en=name, ms=name)
    )
    return ValueSpec(name=name, label=label, type="line", required=False), "line"


def column_entries(template: Template, columns: list[str]) -> list[dict[str, Any]]:
    """One dictionary entry per export column, in the export's order."""
    entries: list[dict[str, Any]] = []
    for col in columns:
        if col in RECORD_COLUMNS:
            c = RECORD_COLUMNS[col]
            entries.append(
                {
                    "name": col,
                    "field": None,
                    "label": {"en": c.en, "ms": c.ms},
                    "type": c.type,
                    "dtype": c.dtype,
                    "sensitivity": str(c.sensitivity),
                    "description": c.meaning,
                }
            )
            continue
        name, sep, rest = col.partition("__")
        suffix = sep + rest
        c = FIELD_SUFFIXES[suffix]
        spec, role = _spec_of(template, name)
        # A field's value columns are as sensitive as the field; its provenance is not.
        value_column = suffix in ("", "__normalised")
        entry: dict[str, Any] = {
            "name": col,
            "field": name,
            "role": role,
            "label": {
                "en": f"{spec.label.en} {c.en}".strip(),
                "ms": f"{spec.label.ms} {c.ms}".strip(),
            },
            "type": spec.type if value_column else c.type,
            "dtype": c.dtype,
            "sensitivity": str(spec.sensitivity) if value_column else str(Sensitivity.PUBLIC),
            "description": c.meaning,
        }
        if suffix == "":
            entry["validators"] = _validators(spec) if role != "line" else {"required": False}
        if suffix == "__normalised":
            entry["normalisation"] = normalisation_of(spec)
        entries.append(entry)
    return entries


def batch_dictionary(
    template: Template,
    version: dict[str, Any],
    batch_id: str,
    columns: list[str],
    audit_columns: dict[str, Column],
    files: dict[str, str],
    csv_note: str,
) -> dict[str, Any]:
    """The whole data dictionary of a batch's exports, as plain (JSON-ready) data."""
    fields = [f.name for f in template.fields]
    return {
        "batch_id": batch_id,
        "template": {
            "name": template.name,
            "title": {"en": template.title.en, "ms": template.title.ms},
            "kind": template.kind,
            **version,
        },
        "files": files,
        "fields": fields,
        "key_fields": [k.name for k in template.key_fields],
        # Template-free pages: each text line the OCR found is a column of its own.
        "text_lines": sorted(
            {c for c in columns if LINE_NAME.fullmatch(c) and template.spec(c) is None}
        ),
        "rules": [
            {
                "name": r.name,
                "check": r.check,
                "fields": list(r.field_names()),
                "description": r.description,
            }
            for r in template.rules
        ],
        "statuses": dict(STATUSES),
        "csv": csv_note,
        "columns": column_entries(template, columns),
        "audit_columns": [
            {
                "name": name,
                "label": {"en": c.en, "ms": c.ms},
                "type": c.type,
                "description": c.meaning,
            }
            for name, c in audit_columns.items()
        ],
    }


DICTIONARY_CSV_COLUMNS = (
    "name",
    "field",
    "role",
    "label_en",
    "label_ms",
    "type",
    "dtype",
    "sensitivity",
    "required",
    "format_hint",
    "pattern",
    "date_formats",
    "range_min",
    "range_max",
    "allowed",
    "checksum",
    "normalisation",
    "description",
)


def dictionary_rows(dictionary: dict[str, Any]) -> list[dict[str, Any]]:
    """The dictionary's columns flattened to one row each (lists joined with '; ')."""
    rows = []
    for e in dictionary["columns"]:
        v = e.get("validators", {})
        rng = v.get("range") or {}
        rows.append(
            {
                "name": e["name"],
                "field": e["field"],
                "role": e.get("role"),
                "label_en": e["label"]["en"],
                "label_ms": e["label"]["ms"],
                "type": e["type"],
                "dtype": e["dtype"],
                "sensitivity": e["sensitivity"],
                "required": v.get("required"),
                "format_hint": v.get("format_hint"),
                "pattern": v.get("pattern"),
                "date_formats": "; ".join(v["date_formats"]) if "date_formats" in v else None,
                "range_min": rng.get("min"),
                "range_max": rng.get("max"),
                "allowed": "; ".join(v["allowed"]) if "allowed" in v else None,
                "checksum": v.get("checksum"),
                "normalisation": e.get("normalisation"),
                "description": e["description"],
            }
        )
    return rows
