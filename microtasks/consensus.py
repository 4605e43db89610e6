"""Consensus over the evidence for one field: a pure function, returning value, votes, agreement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ANSWER_KINDS = ("value", "unreadable", "blank")


@dataclass(frozen=True)
class Vote:
    """One piece of evidence: what a person (or the OCR) says the field holds."""

    kind: str  # value | unreadable | blank
    value: str
    source: str  # ocr | human


@dataclass(frozen=True)
class Consensus:
    """The outcome: settled or not, the agreed kind and value, the vote tally and agreement."""

    settled: bool
    kind: str | None
    value: str | None
    votes: dict[str, int]
    agreement: float
    human_votes: int


def normalise(kind: str, value: str) -> str:
    """The form in which answers are compared: whitespace folded (empty for non-values)."""
    return " ".join(value.split()) if kind == "value" else ""


def _key(v: Vote) -> str:
    return f"{v.kind}:{normalise(v.kind, v.value)}"


def reach_consensus(votes: Sequence[Vote], max_human_votes: int) -> Consensus:
    """Settle when two independent votes agree and one is human; at the cap, take the plurality.

    The OCR guess counts as one vote, so OCR plus one agreeing worker settles a field;
    otherwise two agreeing workers do. A field whose workers keep disagreeing settles at
    `max_human_votes` on the most common answer, with its low agreement kept for review.
    """
    humans = [v for v in votes if v.source == "human"]
    tally: dict[str, int] = {}
    first: dict[str, Vote] = {}
    has_human: dict[str, bool] = {}
    for v in votes:
        k = _key(v)
        tally[k] = tally.get(k, 0) + 1
        first.setdefault(k, v)
        has_human[k] = has_human.get(k, False) or v.source == "human"
    if not humans:
        return Consensus(False, None, None, tally, 0.0, 0)
    # Most votes first; on a tie, the answer a person gave first wins over later ones.
    order = sorted(
        (k for k in tally if has_human[k]),
        key=lambda k: (-tally[k], next(i for i, v in enumerate(votes) if _key(v) == k)),
    )
    best = order[0]
    agreement = tally[best] / len(votes)
    settled = tally[best] >= 2 or len(humans) >= max_human_votes
    winner = first[best]
    value = normalise(winner.kind, winner.value)
    return Consensus(settled, winner.kind, value, tally, agreement, len(humans))
