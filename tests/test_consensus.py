"""Consensus is a pure function: when does evidence settle a field, and on what."""

from __future__ import annotations

from microtasks.consensus import Vote, reach_consensus


def ocr(text: str) -> Vote:
    return Vote("value", text, "ocr")


def human(text: str, kind: str = "value") -> Vote:
    return Vote(kind, text, "human")


def test_ocr_and_one_agreeing_worker_settle() -> None:
    c = reach_consensus([ocr("JALAN  MERANTI"), human("JALAN MERANTI ")], max_human_votes=4)
    assert c.settled and c.value == "JALAN MERANTI" and c.agreement == 1.0


def test_ocr_alone_never_settles() -> None:
    c = reach_consensus([ocr("12/03/1990")], max_human_votes=4)
    assert not c.settled and c.value is None


def test_disagreement_waits_for_another_worker() -> None:
    c = reach_consensus([ocr("12/08/1990"), human("12/03/1990")], max_human_votes=4)
    assert not c.settled
    c = reach_consensus([ocr("12/08/1990"), human("12/03/1990"), human("12/03/1990")], 4)
    assert c.settled and c.value == "12/03/1990"
    assert c.votes == {"value:12/08/1990": 1, "value:12/03/1990": 2}
    assert abs(c.agreement - 2 / 3) < 1e-9


def test_unreadable_votes_agree_with_each_other_not_with_text() -> None:
    c = reach_consensus([ocr("X1"), human("", "unreadable"), human("junk", "unreadable")], 4)
    assert c.settled and c.kind == "unreadable" and c.value == ""


def test_cap_settles_on_plurality_of_people_with_low_agreement() -> None:
    votes = [ocr("A"), human("B"), human("C"), human("D"), human("C")]
    c = reach_consensus(votes, max_human_votes=4)
    assert c.settled and c.value == "C" and c.agreement == 2 / 5
    c = reach_consensus([human("B"), human("C")], max_human_votes=2)
    assert c.settled and c.value == "B"  # tie: the earlier answer wins, deterministically
