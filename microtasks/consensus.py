"""Consensus over the evidence for one field: a pure function returning value, votes, agreement.

Each vote carries its voter's estimated accuracy. A candidate answer's score is the sum of
the log-likelihood ratios of the votes for it, log(p·M/(1−p)), where M is how many wrong
answers a mistaken voter could plausibly give; its posterior is exp(score) over one plus
the sum for all candidates (the one standing for "a value nobody gave"). A field settles
when at least two independent votes agree and the posterior reaches the target.

A person shown the OCR's guess pre-filled who submits it unchanged (a confirmation) is not
an independent vote: people checking a pre-filled value miss many of its errors (blind
double entry gives about 28× fewer errors than visual checking, Barchard et al. 2008). A
confirmation counts for log(p/m), where m is how often that worker accepts a wrong
pre-fill (microtasks.quality), and adds nothing to the count of independent votes: the OCR
and everyone who confirmed it are one source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from kerani.microtasks.normalise import normalise_answer

ANSWER_KINDS = ("value", "unreadable", "blank")


@dataclass(frozen=True)
class Vote:
    """One piece of evidence: what a person (or the OCR) says the field holds, and how reliable."""

    kind: str  # value | unreadable | blank
    value: str
    source: str  # ocr | human
    accuracy: float = 0.8
    trusted: bool = False
    anchored: bool = False  # shown the OCR's guess pre-filled (a person's vote only)
    accepts_wrong: float = 0.3  # how often this person accepts a wrong pre-filled guess


@dataclass(frozen=True)
class Consensus:
    """The outcome: settled or not, the agreed kind and value, the tally, agreement, posterior."""

    settled: bool
    kind: str | None
    value: str | None
    votes: dict[str, int]
    agreement: float
    human_votes: int
    posterior: float = 0.0
    reason: str = ""
    voters_for: tuple[int, ...] = field(default_factory=tuple)  # indexes of the winning votes
    independent: int = 0  # independent sources behind the winning answer
    confirmations: int = 0  # pre-filled confirmations of the OCR's guess among its votes


def answer_key(kind: str, value: str, field_type: str = "text") -> str:
    """The form in which two answers are compared: kind plus the type-normalised value."""
    return f"{kind}:{normalise_answer(field_type, value)}" if kind == "value" else f"{kind}:"


def normalise(kind: str, value: str, field_type: str = "text") -> str:
    """The value a settled answer is stored as (empty for unreadable or blank)."""
    return normalise_answer(field_type, value) if kind == "value" else ""


def _llr(p: float, alternatives: float) -> float:
    p = min(max(p, 0.01), 0.999)
    return math.log(p * alternatives / (1.0 - p))


def _confirmation_llr(p: float, accepts_wrong: float) -> float:
    """What a confirmation of a pre-filled guess says for it: P(confirm | right) = p over
    P(confirm | wrong) = how often the person lets a wrong pre-fill through."""
    p = min(max(p, 0.01), 0.999)
    return math.log(p / min(max(accepts_wrong, 0.02), 1.0))


def is_confirmation(vote: Vote, ocr_key: str | None, key: str) -> bool:
    """A person's vote that repeats the pre-filled OCR guess they were shown."""
    return vote.source == "human" and vote.anchored and ocr_key is not None and key == ocr_key


def reach_consensus(
    votes: Sequence[Vote],
    max_human_votes: int,
    *,
    field_type: str = "text",
    target: float = 0.995,
    min_agreeing: int = 2,
    alternatives: float = 10.0,
    arbitration: bool = False,
    arbiter_alone: bool = False,
) -> Consensus:
    """Settle a field on its votes, or say it needs more evidence.

    - Settles when `min_agreeing` votes agree, at least one of them human, and the
      posterior of their answer reaches `target`.
    - In `arbitration`, a trusted worker's newest vote settles the field on its answer when
      it agrees with an earlier vote (an arbiter picks among the answers; a lone new answer
      from them is one more vote, since arbiters slip too). With `arbiter_alone` (the earlier
      answers broke a rule of the form), the arbiter's answer settles on its own.
    - Once `max_human_votes` people have answered, settles on the answer with the highest
      posterior, its low agreement kept for review.
    """
    humans = [v for v in votes if v.source == "human"]
    keys = [answer_key(v.kind, v.value, field_type) for v in votes]
    ocr_key = next((k for v, k in zip(votes, keys, strict=True) if v.source == "ocr"), None)
    tally: dict[str, int] = {}
    score: dict[str, float] = {}
    independent: dict[str, int] = {}
    confirmations: dict[str, int] = {}
    for v, k in zip(votes, keys, strict=True):
        tally[k] = tally.get(k, 0) + 1
        if is_confirmation(v, ocr_key, k):
            # One source with the OCR: it weighs what this person's checking is worth.
            score[k] = score.get(k, 0.0) + _confirmation_llr(v.accuracy, v.accepts_wrong)
            confirmations[k] = confirmations.get(k, 0) + 1
        else:
            score[k] = score.get(k, 0.0) + _llr(v.accuracy, alternatives)
            independent[k] = independent.get(k, 0) + 1
    if not humans:
        return Consensus(False, None, None, tally, 0.0, 0, reason="no person has answered")
    top = max(score.values())
    denominator = math.exp(-top) + sum(math.exp(s - top) for s in score.values())
    posterior = {k: math.exp(s - top) / denominator for k, s in score.items()}
    human_keys = {k for v, k in zip(votes, keys, strict=True) if v.source == "human"}
    # Best human-backed answer; ties go to the answer a person gave first.
    first_seen = {k: i for i, k in reversed(list(enumerate(keys)))}
    best = min(human_keys, key=lambda k: (-posterior[k], first_seen[k]))
    reason = ""
    arbiter_key = keys[-1] if arbitration and votes[-1].trusted else None
    if arbiter_key is not None and (arbiter_alone or tally[arbiter_key] >= 2):
        best = arbiter_key
        settled, reason = True, "arbitrated by a trusted worker"
    elif independent.get(best, 0) >= min_agreeing and posterior[best] >= target:
        settled, reason = (
            True,
            (f"{independent[best]} independent votes agree, posterior {posterior[best]:.4f}"),
        )
    elif len(humans) >= max_human_votes:
        settled, reason = True, f"{len(humans)} people asked: settled on the likeliest answer"
    else:
        settled = False
        reason = (
            f"posterior {posterior[best]:.4f} with {independent.get(best, 0)} independent "
            f"agreeing votes"
        )
    winner_index = keys.index(best)
    winner = votes[winner_index]
    # Store the value as the first person who gave it wrote it, normalised for its type.
    human_winner = next(
        (v for v, k in zip(votes, keys, strict=True) if k == best and v.source == "human"), winner
    )
    return Consensus(
        settled=settled,
        kind=winner.kind,
        value=normalise(human_winner.kind, human_winner.value, field_type),
        votes=tally,
        agreement=tally[best] / len(votes),
        human_votes=len(humans),
        posterior=posterior[best],
        reason=reason,
        voters_for=tuple(i for i, k in enumerate(keys) if k == best),
        independent=independent.get(best, 0),
        confirmations=confirmations.get(best, 0),
    )
