"""Gold from a truth folder: the demo's and the benchmarks' stand-in for staff keying gold."""

from __future__ import annotations

from sqlalchemy import Engine

from kerani.evaluation.accuracy import field_truths
from kerani.evaluation.ground_truth import TruthPage
from kerani.microtasks.gold import make_gold


def make_gold_batch(db: Engine, batch_id: str, truth: list[TruthPage]) -> int:
    """Make every field of a batch with a known true text gold (pages with ground truth)."""
    mapping, _missed = field_truths(db, batch_id, truth)
    return make_gold(db, {fid: text for fid, text in mapping.items() if text})
