"""Field boxes proposed from the OCR of a sample form: printed labels such as "Nama",
"No. Kad Pengenalan", "Tarikh lahir" or "Jumlah" suggest a field beside or under them.

The template designer shows each proposal for the user to accept, move or drop; nothing is
used unless a person accepts it. Pure functions over the sample's words.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kerani.ocr.engine import Box, Word

_SPLIT = re.compile(r"[^0-9A-Z]+")
MAX_LABEL_WORDS = 9  # a longer line is running text (a declaration), not a field's label


@dataclass(frozen=True)
class Cue:
    """Printed words that label a kind of field, and the field they suggest."""

    cues: tuple[str, ...]  # upper-case word sequences, any of which marks the label
    name: str
    type: str
    en: str
    ms: str
    sensitivity: str = "personal"
    format_hint: str | None = None
    checksum: str | None = None


# The more specific cue first where two share words ("Tarikh lahir" before "Tarikh").
CUES: tuple[Cue, ...] = (
    Cue(
        (
            "NO KAD PENGENALAN",
            "KAD PENGENALAN",
            "NO MYKAD",
            "MYKAD",
            "NRIC",
            "IC NO",
            "IDENTITY CARD",
        ),
        "ic_number",
        "ic_number",
        "MyKad number",
        "No. MyKad",
        "restricted",
        "YYMMDD-PB-NNNN",
        "mykad",
    ),
    Cue(
        ("TARIKH LAHIR", "DATE OF BIRTH"),
        "date_of_birth",
        "date",
        "Date of birth",
        "Tarikh lahir",
        format_hint="DD/MM/YYYY",
    ),
    Cue(
        ("TARIKH PERMOHONAN", "DATE OF APPLICATION", "APPLICATION DATE"),
        "application_date",
        "date",
        "Date of application",
        "Tarikh permohonan",
        format_hint="DD/MM/YYYY",
    ),
    Cue(
        ("NAMA PENUH", "FULL NAME", "NAMA", "NAME"), "full_name", "text", "Full name", "Nama penuh"
    ),
    Cue(
        ("NO TELEFON", "TELEFON", "PHONE", "TEL"),
        "phone",
        "phone",
        "Phone number",
        "No. telefon",
        format_hint="012-3456789",
    ),
    Cue(("POSKOD", "POSTCODE", "POSTAL CODE"), "postcode", "postcode", "Postcode", "Poskod"),
    Cue(("ALAMAT", "ADDRESS"), "address", "text", "Address", "Alamat"),
    Cue(("BANDAR", "CITY", "TOWN"), "city", "text", "City", "Bandar"),
    Cue(("NEGERI", "STATE"), "state", "text", "State", "Negeri"),
    Cue(
        ("PENDAPATAN", "INCOME"),
        "monthly_income",
        "amount",
        "Monthly income",
        "Pendapatan bulanan",
        format_hint="1234.50",
    ),
    Cue(
        ("BILANGAN ISI RUMAH", "PEOPLE IN HOUSEHOLD", "HOUSEHOLD SIZE"),
        "household_size",
        "number",
        "People in household",
        "Bilangan isi rumah",
    ),
    Cue(
        ("JUMLAH", "TOTAL", "AMAUN", "AMOUNT"),
        "total",
        "amount",
        "Total",
        "Jumlah",
        format_hint="1234.50",
    ),
    Cue(("TARIKH", "DATE"), "date", "date", "Date", "Tarikh", format_hint="DD/MM/YYYY"),
    Cue(
        ("TANDATANGAN", "SIGNATURE"), "signature", "signature", "Signature", "Tandatangan", "public"
    ),
    Cue(("E MEL", "EMEL", "EMAIL"), "email", "text", "Email", "E-mel"),
)


@dataclass(frozen=True)
class Proposal:
    """A field the sample's labels suggest: where its value goes, and what it is."""

    name: str
    type: str
    label_en: str
    label_ms: str
    box: Box
    label_box: Box  # the printed label that suggested it
    label_text: str
    sensitivity: str
    format_hint: str | None
    checksum: str | None


@dataclass(frozen=True)
class _Line:
    words: tuple[str, ...]
    text: str
    box: Box


def _segment(ws: list[Word]) -> list[list[Word]]:
    """Split one OCR line where a wide gap parts two labels printed on the same row."""
    parts: list[list[Word]] = [[ws[0]]]
    for prev, w in itertools.pairwise(ws):
        height = max(8, prev.box[3] - prev.box[1])
        if w.box[0] - prev.box[2] > 2.5 * height:
            parts.append([])
        parts[-1].append(w)
    return parts


def _lines(words: Sequence[Word]) -> list[_Line]:
    by_line: dict[tuple[int, ...], list[Word]] = {}
    for w in words:
        if w.text.strip():
            by_line.setdefault(w.line, []).append(w)
    out = []
    for line_words in by_line.values():
        line_words.sort(key=lambda w: w.box[0])
        for ws in _segment(line_words):
            box = (
                min(w.box[0] for w in ws),
                min(w.box[1] for w in ws),
                max(w.box[2] for w in ws),
                max(w.box[3] for w in ws),
            )
            text = " ".join(w.text for w in ws)
            out.append(_Line(tuple(t for t in _SPLIT.split(text.upper()) if t), text, box))
    out.sort(key=lambda ln: (ln.box[1], ln.box[0]))
    return out


def _has_sequence(words: tuple[str, ...], cue: tuple[str, ...]) -> bool:
    n = len(cue)
    return any(words[i : i + n] == cue for i in range(len(words) - n + 1))


def _cue_of(line: _Line) -> tuple[Cue, int] | None:
    """The cue the line is the label of, and how many words matched (more is surer)."""
    if not line.words or len(line.words) > MAX_LABEL_WORDS:
        return None
    best: tuple[Cue, int] | None = None
    for cue in CUES:
        for words in cue.cues:
            seq = tuple(words.split())
            if _has_sequence(line.words, seq) and (best is None or len(seq) > best[1]):
                best = (cue, len(seq))
    return best


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _box_for(
    line: _Line, labels: Sequence[_Line], all_lines: Sequence[_Line], width: int, height: int
) -> Box:
    x0, y0, x1, y1 = line.box
    h = max(8, y1 - y0)
    margin = max(h, round(0.04 * width))
    same_row = [ln for ln in all_lines if ln is not line and ln.box[1] < y1 and y0 < ln.box[3]]
    right_of = [ln.box[0] for ln in same_row if ln.box[0] >= x1]
    free_right = (min(right_of) if right_of else width - margin) - x1
    if line.text.rstrip().endswith(":") and free_right >= 4 * h:
        # "Nama: ____": the value is written beside its label.
        right = (min(right_of) if right_of else width - margin) - h // 2
        return (x1 + h // 2, max(0, y0 - h // 2), right, min(height, y1 + h // 2))
    # Else under it, as far as the next label to the right, and down to the next label.
    next_right = [
        ln.box[0]
        for ln in labels
        if ln is not line and ln.box[0] > x1 and ln.box[1] < y1 + h and y0 - h < ln.box[3]
    ]
    right = (min(next_right) - margin // 2) if next_right else width - margin
    top = y1 + max(2, h // 3)
    below = [ln.box[1] for ln in labels if ln.box[1] > y1 and ln.box[0] < right and x0 < ln.box[2]]
    bottom = min([top + round(3.5 * h), *[b - h // 2 for b in below], height])
    return (x0, top, max(x0 + h, right), max(top + h, bottom))


def propose_fields(words: Sequence[Word], width: int, height: int) -> list[Proposal]:
    """Fields suggested by the printed labels among a sample page's words, in reading order;
    each kind of field once, and no two boxes overlapping."""
    lines = _lines(words)
    cued = [(ln, c) for ln in lines if (c := _cue_of(ln)) is not None]
    labels = [ln for ln, _c in cued]
    out: list[Proposal] = []
    used: set[str] = set()
    for line, (cue, _n) in cued:
        if cue.name in used:
            continue
        box = _box_for(line, labels, lines, width, height)
        if any(_overlap(box, p.box) for p in out) or any(
            _overlap(box, ln.box) for ln in labels if ln is not line
        ):
            continue  # crowded: the user draws this one
        used.add(cue.name)
        out.append(
            Proposal(
                cue.name,
                cue.type,
                cue.en,
                cue.ms,
                box,
                line.box,
                line.text,
                cue.sensitivity,
                cue.format_hint,
                cue.checksum,
            )
        )
    return out
