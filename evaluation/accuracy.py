"""Score a batch against ground truth: which field holds which true text, and how many are right."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlalchemy import Engine, select

from kerani.core.vocabulary import FieldStatus, ValueKind
from kerani.evaluation.ground_truth import TruthPage, match_by_box, texts_match
from kerani.storage import schema


@dataclass(frozen=True)
class Score:
    """Field accuracy of a batch's current values against the truth."""

    truth_fields: int
    correct: int
    missed: int  # true fields that no OCR field covers (counted as wrong)
    auto_accepted: int
    auto_accepted_correct: int
    # Of the above, a template-free page's key fields (company, date, total), which the
    # lines' figures leave out.
    key_fields: int = 0
    key_correct: int = 0

    @property
    def accuracy(self) -> float:
        """Share of true fields whose value is exactly right (after whitespace folding)."""
        return self.correct / self.truth_fields if self.truth_fields else 0.0


def _truth_by_name(truth: list[TruthPage]) -> dict[str, TruthPage]:
    return {PurePosixPath(t.page).name: t for t in truth}


def field_truths(
    db: Engine, batch_id: str, truth: list[TruthPage]
) -> tuple[dict[int, str | None], int]:
    """Map each field of the batch to its true text (None: no true text there); count misses.

    Template fields match truth by name; text lines match by overlap of their boxes, and a
    template-free page's key fields by name (None when the truth does not name them).
    """
    by_name = _truth_by_name(truth)
    p, s, f = schema.pages, schema.scans, schema.fields
    mapping: dict[int, str | None] = {}
    missed = 0
    with db.connect() as conn:
        pages = conn.execute(
            select(p.c.id, s.c.filename)
            .join(s, s.c.id == p.c.scan_id)
            .where(p.c.batch_id == batch_id, p.c.page_index == 0)
        ).all()
        for page in pages:
            t = by_name.get(PurePosixPath(page.filename).name)
            if t is None:
                continue
            rows = conn.execute(select(f).where(f.c.page_id == page.id).order_by(f.c.id)).all()
            named = {tf.name: tf.text for tf in t.fields}
            if rows and all(r.name in named for r in rows):
                for r in rows:
                    mapping[r.id] = named[r.name]
                missed += len(set(named) - {r.name for r in rows})
                continue
            # A template-free page's key fields (company, total) are boxed on lines too:
            # only its lines are matched by box, a key field only by its name in the truth.
            lines = [r for r in rows if r.kind == "line"]
            keyed = {r.name for r in rows if r.kind != "line"}
            loose = [tf for tf in t.fields if tf.name not in keyed]
            pairs = match_by_box([(r.x0, r.y0, r.x1, r.y1) for r in lines], loose)
            for i, r in enumerate(lines):
                mapping[r.id] = loose[pairs[i]].text if i in pairs else None
            for r in rows:
                if r.kind != "line":
                    mapping[r.id] = named.get(r.name)
            missed += len(loose) - len(pairs)
    return mapping, missed


def score_batch(db: Engine, batch_id: str, truth: list[TruthPage]) -> Score:
    """Compare the batch's settled field values with the truth."""
    mapping, missed = field_truths(db, batch_id, truth)
    f = schema.fields
    correct = auto = auto_ok = 0
    with db.connect() as conn:
        rows = conn.execute(
            select(f.c.id, f.c.value, f.c.value_kind, f.c.status, f.c.kind).where(
                f.c.id.in_(list(mapping))
            )
        ).all()
    has_lines = any(r.kind == "line" for r in rows)
    keys = keys_ok = 0
    for r in rows:
        true = mapping[r.id]
        if true is None:
            continue
        ok = r.value_kind == ValueKind.TEXT and r.value is not None and texts_match(r.value, true)
        correct += ok
        if has_lines and r.kind != "line":
            keys += 1
            keys_ok += ok
        if r.status == FieldStatus.AUTO_ACCEPTED:
            auto += 1
            auto_ok += ok
    truth_fields = sum(1 for v in mapping.values() if v is not None) + missed
    return Score(truth_fields, correct, missed, auto, auto_ok, keys, keys_ok)
