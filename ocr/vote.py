"""Combining several readings of one field: character alignment and a weighted vote (ROVER).

Each reading is aligned to the most trusted one (the pivot) by edit distance; the
alignment makes a row of slots (each pivot character, and the gaps between them, where
another reading may insert characters), and in each slot the candidates (a character,
an insertion, or nothing) are voted on with the readings' weights. Three readings that
each err in a different place give the right text though none of them read it; two give
the more trusted reading wherever they differ.

A pure function of its inputs, kept apart from the engines (Zooniverse's reducers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One engine's reading of a field and the weight of its vote (> 0)."""

    text: str
    weight: float


def _align(pivot: str, other: str) -> tuple[list[str], list[str]]:
    """What `other` has at each pivot character ('' for nothing) and in each gap before one.

    `at[i]` is the character `other` put where pivot[i] is; `gaps[i]` what it inserted
    before pivot[i] (gaps[len(pivot)]: after the last).
    """
    n, m = len(pivot), len(other)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
                cost[i - 1][j - 1] + (pivot[i - 1] != other[j - 1]),
            )
    at = [""] * n
    gaps = [""] * (n + 1)
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (pivot[i - 1] != other[j - 1]):
            at[i - 1] = other[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            at[i - 1] = ""
            i -= 1
        else:
            gaps[i] = other[j - 1] + gaps[i]
            j -= 1
    return at, gaps


def _winner(votes: dict[str, float], pivot_choice: str) -> str:
    # Ties go to the pivot's own choice: the most trusted reading.
    best = max(votes.values())
    if votes.get(pivot_choice, 0.0) >= best:
        return pivot_choice
    return min(choice for choice, weight in votes.items() if weight == best)


def vote(candidates: Sequence[Candidate]) -> str:
    """The text the weighted readings agree on, slot by slot ('' when none is given)."""
    readings = [c for c in candidates if c.weight > 0]
    if not readings:
        return ""
    pivot = max(readings, key=lambda c: c.weight)
    others = [c for c in readings if c is not pivot]
    alignments = [(_align(pivot.text, c.text), c.weight) for c in others]
    out: list[str] = []
    for i in range(len(pivot.text) + 1):
        gap_votes: dict[str, float] = defaultdict(float)
        gap_votes[""] += pivot.weight
        for (_at, gaps), weight in alignments:
            gap_votes[gaps[i]] += weight
        out.append(_winner(gap_votes, ""))
        if i == len(pivot.text):
            break
        char_votes: dict[str, float] = defaultdict(float)
        char_votes[pivot.text[i]] += pivot.weight
        for (at, _gaps), weight in alignments:
            char_votes[at[i]] += weight
        out.append(_winner(char_votes, pivot.text[i]))
    return "".join(out)
