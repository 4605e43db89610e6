"""The crowd simulator's pieces: edit distance, slips, each profile's answers, keystrokes."""

from __future__ import annotations

import random

import pytest

from kerani.evaluation.crowd_sim import (
    CAREFUL,
    CARELESS,
    JUNK,
    SPAMMER,
    Profile,
    answer_for,
    corrupt,
    keystrokes,
)
from kerani.evaluation.ground_truth import edit_distance


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [
        ("", "", 0),
        ("", "ABC", 3),
        ("KITTEN", "SITTING", 3),
        ("TOTAL", "TOTAL", 0),
        ("RM 9.00", "RM 900", 1),
    ],
)
def test_edit_distance(a: str, b: str, d: int) -> None:
    assert edit_distance(a, b) == d == edit_distance(b, a)


def test_a_slip_changes_the_text_by_one_edit() -> None:
    rng = random.Random(1)
    for text in ("TAMAN DAYA", "9.00", "X"):
        for _ in range(50):
            slipped = corrupt(text, rng)
            assert slipped != text and edit_distance(slipped, text) == 1


def test_profiles_answer_as_stated() -> None:
    rng = random.Random(3)
    truth, guess = "JALAN SAGU 18", "JALAN SAGV 18"
    assert answer_for(truth, guess, SPAMMER, rng) == {"kind": "value", "value": guess}
    assert answer_for(truth, "", SPAMMER, rng)["kind"] == "blank"
    assert answer_for(None, guess, CAREFUL, rng)["kind"] == "blank"
    junk = [answer_for(truth, guess, JUNK, rng)["value"] for _ in range(20)]
    assert truth not in junk and guess not in junk
    perfect = Profile("careful", 0.0)
    assert all(answer_for(truth, guess, perfect, rng)["value"] == truth for _ in range(50))
    wrong = sum(answer_for(truth, "", CARELESS, rng)["value"] != truth for _ in range(2000))
    assert 0.10 < wrong / 2000 < 0.20  # blind: the stated 15% slips, within sampling error
    # Shown a near miss pre-filled, a careless worker lets 75% through, then slips on 15%
    # of the rest: 1 − 0.25 × 0.85 ≈ 79% wrong; a careful one 50%, then 2%: about 51%.
    careless = sum(answer_for(truth, guess, CARELESS, rng)["value"] != truth for _ in range(2000))
    assert 0.75 < careless / 2000 < 0.83
    careful = sum(answer_for(truth, guess, CAREFUL, rng)["value"] != truth for _ in range(2000))
    assert 0.46 < careful / 2000 < 0.56
    far = "JALAN KUBU 99"  # not a near miss: a careful worker lets 25% through
    missed = sum(answer_for(truth, far, CAREFUL, rng)["value"] == far for _ in range(2000))
    assert 0.21 < missed / 2000 < 0.29


def test_keystrokes_count_edits_from_the_prefill_plus_submit() -> None:
    assert keystrokes("TOTAL 9.00", {"kind": "value", "value": "TOTAL 9.00"}) == 1
    assert keystrokes("TOTAL 9.O0", {"kind": "value", "value": "TOTAL 9.00"}) == 2
    assert keystrokes("", {"kind": "value", "value": "ABC"}) == 4
    assert keystrokes("junk", {"kind": "unreadable", "value": ""}) == 1
