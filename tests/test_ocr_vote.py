"""ocr.vote: readings aligned character by character and voted on with their weights."""

from __future__ import annotations

from kerani.ocr.vote import Candidate, vote


def test_three_readings_each_wrong_somewhere_vote_the_right_text() -> None:
    readings = [
        Candidate("T0TAL 12.50", 0.9),  # a zero for the O
        Candidate("TOTAL 1250", 0.8),  # the decimal point dropped
        Candidate("TOTAL 12.5O", 0.7),  # an O for the zero
    ]
    assert vote(readings) == "TOTAL 12.50"


def test_two_readings_give_the_more_trusted_wherever_they_differ() -> None:
    assert vote([Candidate("540SR", 0.9), Candidate("5.40 SR", 1.2)]) == "5.40 SR"
    assert vote([Candidate("540SR", 0.9), Candidate("5.40 SR", 0.5)]) == "540SR"


def test_insertions_deletions_and_empty_readings() -> None:
    # Two light readings outvote a heavy one that dropped a word.
    assert (
        vote(
            [Candidate("JALAN", 0.9), Candidate("JALAN AMPANG", 0.5)] * 1
            + [Candidate("JALAN AMPANG", 0.5)]
        )
        == "JALAN AMPANG"
    )
    assert vote([Candidate("", 0.4), Candidate("xy", 0.5), Candidate("xy", 0.3)]) == "xy"
    assert vote([Candidate("abc", 1.0)]) == "abc"
    assert vote([]) == "" and vote([Candidate("x", 0.0)]) == ""
