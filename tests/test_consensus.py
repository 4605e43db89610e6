"""Consensus is a pure function: when does evidence settle a field, and on what."""

from __future__ import annotations

from kerani.microtasks.consensus import Vote, reach_consensus
from kerani.microtasks.normalise import normalise_answer


def ocr(text: str, accuracy: float = 0.6) -> Vote:
    return Vote("value", text, "ocr", accuracy)


def human(text: str, kind: str = "value", accuracy: float = 0.97, trusted: bool = False) -> Vote:
    return Vote(kind, text, "human", accuracy, trusted)


def test_ocr_and_one_agreeing_worker_settle() -> None:
    c = reach_consensus([ocr("JALAN  MERANTI"), human("JALAN MERANTI ")], max_human_votes=4)
    assert c.settled and c.value == "JALAN MERANTI" and c.agreement == 1.0
    assert c.posterior > 0.995 and c.voters_for == (0, 1)


def test_ocr_alone_never_settles() -> None:
    c = reach_consensus([ocr("12/03/1990", accuracy=0.99)], max_human_votes=4)
    assert not c.settled and c.value is None


def test_one_person_alone_never_settles() -> None:
    c = reach_consensus([human("12/03/1990", accuracy=0.999)], max_human_votes=4)
    assert not c.settled


def test_disagreement_waits_for_another_worker() -> None:
    c = reach_consensus([ocr("12/08/1990"), human("12/03/1990")], max_human_votes=4)
    assert not c.settled
    votes = [ocr("12/08/1990"), human("12/03/1990"), human("12/03/1990")]
    c = reach_consensus(votes, 4, field_type="date")
    assert c.settled and c.value == "12/03/1990"
    assert c.votes == {"value:12/08/1990": 1, "value:12/03/1990": 2}
    assert abs(c.agreement - 2 / 3) < 1e-9


def test_workers_of_unknown_quality_need_more_evidence_against_the_ocr() -> None:
    votes = [ocr("A1", accuracy=0.8), human("B1", accuracy=0.8), human("B1", accuracy=0.8)]
    c = reach_consensus(votes, 4)
    assert not c.settled and 0.9 < c.posterior < 0.995
    c = reach_consensus([*votes, human("B1", accuracy=0.8)], 4)
    assert c.settled and c.value == "B1"


def test_a_careless_voter_cannot_outweigh_careful_ones() -> None:
    votes = [
        ocr("X"),
        human("SITI", accuracy=0.98),
        human("SITl", accuracy=0.55),
        human("SITI", accuracy=0.98),
    ]
    c = reach_consensus(votes, 5)
    assert c.settled and c.value == "SITI"


def test_unreadable_votes_agree_with_each_other_not_with_text() -> None:
    votes = [ocr("X1"), human("", "unreadable"), human("junk", "unreadable")]
    c = reach_consensus(votes, 4)
    assert c.settled and c.kind == "unreadable" and c.value == ""


def test_answers_are_compared_as_their_type_reads_them() -> None:
    votes = [ocr("1.234,5"), human("RM 1,234.50"), human("1234.5")]
    c = reach_consensus(votes, 4, field_type="amount")
    assert c.settled and c.value == "1234.50"
    votes = [ocr("900312 - 14-5567"), human("900312145567")]
    assert reach_consensus(votes, 4, field_type="ic_number").value == "900312-14-5567"
    assert normalise_answer("date", "3.8.1950") == "03/08/1950"
    assert normalise_answer("text", "Siti  Aminah ") == "Siti Aminah"  # case kept for text


def test_arbitration_settles_on_the_answer_the_trusted_worker_picks() -> None:
    votes = [ocr("A"), human("B"), human("C"), human("C", trusted=True)]
    c = reach_consensus(votes, 6, arbitration=True)
    assert c.settled and c.value == "C" and "arbitrated" in c.reason
    # A new answer from the arbiter is one more vote: the next arbiter decides.
    votes = [ocr("A"), human("B"), human("C"), human("D", trusted=True)]
    assert not reach_consensus(votes, 6, arbitration=True).settled
    c = reach_consensus([*votes, human("D", trusted=True)], 6, arbitration=True)
    assert c.settled and c.value == "D"
    # Sent back because its value broke a form rule: the arbiter's correction stands alone.
    c = reach_consensus(votes, 6, arbitration=True, arbiter_alone=True)
    assert c.settled and c.value == "D"


def test_cap_settles_on_the_likeliest_answer_with_low_agreement() -> None:
    votes = [ocr("A"), human("B"), human("C"), human("D"), human("C")]
    c = reach_consensus(votes, max_human_votes=4)
    assert c.settled and c.value == "C" and c.agreement == 2 / 5
    c = reach_consensus([human("B"), human("C")], max_human_votes=2)
    assert c.settled and c.value == "B"  # tie: the earlier answer wins, deterministically
