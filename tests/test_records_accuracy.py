"""Each source's estimated accuracy without truth: the estimators, the reader and the report."""

from __future__ import annotations

import math
import random
import secrets
from typing import Any

import pytest
from sqlalchemy import insert, select

from kerani.core.errors import BadInputError
from kerani.core.stats import wilson_interval
from kerani.core.vocabulary import FieldStatus, PayKind, Role, ValueKind, ValueSource
from kerani.people.workers import add_person, person_by_code
from kerani.records.accuracy import (
    NOT_ENOUGH,
    SourceEstimate,
    arbitrated_estimate,
    ocr_estimate,
    people_estimate,
    prefilled_confirmations,
    source_estimates,
    staff_estimate,
)
from kerani.records.report import batch_report, markdown_text, report_markdown
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page

# --- the estimators, on known inputs ---------------------------------------------------


def test_ocr_estimate_is_the_wilson_interval_of_the_audited_share() -> None:
    e = ocr_estimate(41, 42, fields=300, templates=["receipt"])
    assert e.source == ValueSource.OCR and e.fields == 300
    assert e.estimate == pytest.approx(41 / 42)
    assert (e.low, e.high) == wilson_interval(41, 42, z=1.96)
    # Worked by hand: centre (41/42 + 1.96²/84) / (1 + 1.96²/42), and so on.
    assert e.low == pytest.approx(0.8768, abs=1e-4) and e.high == pytest.approx(0.9958, abs=1e-4)
    assert e.evidence == "41 of 42 audited auto-accepted fields right (template receipt)"

    few = ocr_estimate(19, 19, fields=300, templates=["receipt"])
    assert (few.estimate, few.low, few.high) == (None, None, None)
    assert few.evidence.startswith(NOT_ENOUGH) and "19 audited" in few.evidence
    assert ocr_estimate(5, 5, min_audited=5).estimate == 1.0
    with pytest.raises(BadInputError, match="audited_right"):
        ocr_estimate(6, 5)


def test_people_estimate_is_the_mean_posterior_with_a_poisson_binomial_interval() -> None:
    halves = people_estimate([0.5] * 100)
    # Mean 0.5; sd of the count sqrt(100 · 0.25) = 5, of the share 0.05; 1.96 of them.
    assert halves.estimate == pytest.approx(0.5)
    assert (halves.low, halves.high) == (pytest.approx(0.402), pytest.approx(0.598))
    assert halves.evidence == "model estimate from 100 fields' votes"

    mixed = people_estimate([0.9] * 10 + [0.99] * 10, fields=25)
    spread = 1.96 * math.sqrt(10 * 0.9 * 0.1 + 10 * 0.99 * 0.01) / 20
    assert mixed.estimate == pytest.approx(0.945)
    assert mixed.low == pytest.approx(0.945 - spread)
    assert mixed.high == 1.0  # 0.945 + 0.098 clipped
    assert mixed.fields == 25 and "5 fields settled without a posterior" in mixed.evidence

    few = people_estimate([0.99] * 19)
    assert few.estimate is None and few.evidence.startswith(NOT_ENOUGH) and few.fields == 19
    none = people_estimate([], fields=7)
    assert none.fields == 7 and none.estimate is None
    assert none.evidence == (
        "not enough evidence yet: none of the 7 fields has a model posterior "
        "(settled before posteriors were kept)"
    )
    arbitrated = arbitrated_estimate([1.0] * 20)
    assert arbitrated.source == ValueSource.ARBITRATED
    assert (arbitrated.estimate, arbitrated.low, arbitrated.high) == (1.0, 1.0, 1.0)
    with pytest.raises(BadInputError, match="posterior"):
        people_estimate([1.5] * 20)


def test_staff_gold_is_stated_not_estimated() -> None:
    assert staff_estimate(3) == SourceEstimate(
        ValueSource.GOLD,
        3,
        None,
        None,
        None,
        "keyed twice by staff, both keyings agreed: taken as right, not measured",
    )


def _simulate(rng: random.Random, n: int) -> tuple[SourceEstimate, float]:
    # Posteriors from a fixed distribution: most fields near sure, a tail of doubtful ones.
    posteriors = [
        rng.betavariate(40, 1) if rng.random() < 0.85 else rng.betavariate(6, 2) for _ in range(n)
    ]
    right = sum(rng.random() < p for p in posteriors)  # each field right with its posterior
    return people_estimate(posteriors), right / n


def test_interval_contains_the_realised_accuracy_on_a_seeded_simulation() -> None:
    estimate, realised = _simulate(random.Random(2024), 2000)
    assert estimate.low is not None and estimate.high is not None
    assert estimate.low <= realised <= estimate.high
    assert estimate.high - estimate.low < 0.03  # narrow enough to say something
    # ... and it does so about 95% of the time, not by luck of one seed.
    rng = random.Random(7)
    trials = [_simulate(rng, 2000) for _ in range(300)]
    covered = sum(
        e.low is not None and e.high is not None and e.low <= r <= e.high for e, r in trials
    )
    assert 0.92 <= covered / len(trials) <= 0.98


# --- the reader, on seeded fields ------------------------------------------------------

Field = dict[str, Any]


def _seed(stores: Stores, template: str, fields: list[Field]) -> tuple[str, int, list[int]]:
    """A page of `template` whose fields (each routed to people) are then set as given."""
    guesses = [
        (f"f{i:03d}", str(x.get("type", "line")), str(x.get("ocr", "TOTAL 12.50")), 10.0)
        for i, x in enumerate(fields)
    ]
    page_id = seed_page(stores, guesses, template=template)
    f = schema.fields
    with stores.db.begin() as conn:
        ids = list(
            conn.execute(select(f.c.id).where(f.c.page_id == page_id).order_by(f.c.id)).scalars()
        )
        for fid, x in zip(ids, fields, strict=True):
            values = {k: v for k, v in x.items() if k not in ("type", "ocr", "answers")}
            if values:
                conn.execute(f.update().where(f.c.id == fid).values(**values))
    return batch_of(stores, page_id), page_id, ids


def _ocr(n: int) -> list[Field]:
    return [
        {
            "status": FieldStatus.AUTO_ACCEPTED,
            "source": ValueSource.OCR,
            "value": "TOTAL 12.50",
            "value_kind": ValueKind.TEXT,
        }
    ] * n


def _people(posteriors: list[float | None], source: str = ValueSource.HUMAN) -> list[Field]:
    return [
        {
            "status": FieldStatus.SETTLED,
            "source": source,
            "value": "TOTAL 12.50",
            "value_kind": ValueKind.TEXT,
            "posterior": p,
        }
        for p in posteriors
    ]


def _audited(value: str, kind: str = ValueKind.TEXT, **more: Any) -> Field:
    settled = {"status": FieldStatus.SETTLED, "source": ValueSource.HUMAN, "posterior": 0.99}
    return {"audit": True, "value": value, "value_kind": kind, **settled, **more}


def test_source_estimates_count_sources_and_read_audits_of_the_same_template(
    stores: Stores,
) -> None:
    human = [0.9] * 10 + [0.99] * 9 + [None]  # one settled before posteriors were kept
    batch, page, _ = _seed(
        stores, "receipt", _ocr(7) + _people(human) + _people([0.97] * 3, ValueSource.ARBITRATED)
    )
    # Another receipt batch's audits measure the receipts' auto-accept rule: 21 of 22 right
    # (one differs only in spacing, which consensus ignores; one was unreadable).
    audits = [_audited("TOTAL 12.50")] * 20 + [_audited("TOTAL  12.50 ")]
    audits += [_audited("", ValueKind.UNREADABLE)]
    audits += [_audited("TOTAL 12.60")]  # wrong
    audits += [{"audit": True, "status": FieldStatus.IN_REVIEW}]  # not settled yet: no count
    _seed(stores, "receipt", audits)
    # A form's audits, all wrong, say nothing about receipts.
    _seed(stores, "bantuan_form", [_audited("else")] * 30)
    # Gold keyed by staff in a third receipt batch: its own source, not an audit.
    gold = {"status": FieldStatus.GOLD, "source": ValueSource.GOLD, "value": "TOTAL 12.50"}

    estimates = {e.source: e for e in source_estimates(stores.db, batch_id=batch)}
    assert list(estimates) == [
        ValueSource.OCR,
        ValueSource.HUMAN,
        ValueSource.ARBITRATED,
        ValueSource.GOLD,
    ]
    assert {s: e.fields for s, e in estimates.items()} == {
        ValueSource.OCR: 7,
        ValueSource.HUMAN: 20,
        ValueSource.ARBITRATED: 3,
        ValueSource.GOLD: 0,
    }
    assert estimates[ValueSource.OCR] == ocr_estimate(21, 23, fields=7, templates=["receipt"])
    assert estimates[ValueSource.OCR].evidence == (
        "21 of 23 audited auto-accepted fields right (template receipt)"
    )
    # 19 posteriors are one short of the minimum: no number, and the reason says so.
    assert estimates[ValueSource.HUMAN].estimate is None
    assert estimates[ValueSource.HUMAN].evidence.startswith(NOT_ENOUGH)
    assert "1 field settled without a posterior" in estimates[ValueSource.HUMAN].evidence
    assert estimates[ValueSource.ARBITRATED].estimate is None

    # One more posterior, on another page of the report's scope: now estimated.
    more_batch, more_page, _ = _seed(stores, "receipt", _people([0.99]) + [gold] * 2)
    both = {e.source: e for e in source_estimates(stores.db, page_ids=[page, more_page])}
    expected = people_estimate([0.9] * 10 + [0.99] * 10, fields=21)
    got = both[ValueSource.HUMAN]
    assert (got.fields, got.evidence) == (21, expected.evidence)
    assert (got.estimate, got.low, got.high) == (
        pytest.approx(0.945),
        pytest.approx(expected.low),
        pytest.approx(expected.high),
    )
    assert both[ValueSource.GOLD] == staff_estimate(2)
    only = {e.source: e.fields for e in source_estimates(stores.db, batch_id=more_batch)}
    assert only[ValueSource.HUMAN] == 1 and only[ValueSource.OCR] == 0
    with pytest.raises(BadInputError, match="batch_id or page_ids"):
        source_estimates(stores.db)


def _answer(
    stores: Stores, field_id: int, value: str, blind: bool | None, kind: str = "value"
) -> int:
    worker = person_by_code(
        stores.db, add_person(stores.db, secrets.token_hex(4), Role.WORKER, practised=True)
    )
    t, a = schema.tasks, schema.answers
    with stores.db.begin() as conn:
        task = conn.execute(select(t.c.id).where(t.c.field_id == field_id)).scalar_one()
        return int(
            conn.execute(
                insert(a)
                .values(
                    task_id=task,
                    worker_id=worker.id,
                    kind=kind,
                    value=value,
                    idempotency_key=secrets.token_hex(8),
                    created_at=utcnow(),
                    prefilled=None if blind is None else ("" if blind else "x"),
                    blind=blind,
                )
                .returning(a.c.id)
            ).scalar_one()
        )


def _confirmation_batch(stores: Stores) -> tuple[str, list[int]]:
    amount = {"type": "amount", "ocr": "RM 12.50"}
    settled = {"status": FieldStatus.SETTLED, "source": ValueSource.HUMAN, "posterior": 0.99}
    batch, _page, ids = _seed(
        stores,
        "receipt",
        [
            {**amount, **settled, "value": "12.50", "value_kind": ValueKind.TEXT},
            {**amount, **settled, "value": "12.50", "value_kind": ValueKind.TEXT},
            {**amount, **settled, "value": "12.50", "value_kind": ValueKind.TEXT},
            {**amount, **settled, "value": "12.60", "value_kind": ValueKind.TEXT},
            {**amount, **settled, "value": "", "value_kind": ValueKind.UNREADABLE},
            {**amount, "status": FieldStatus.IN_REVIEW},
            {**amount, **settled, "value": "12.50", "value_kind": "text", "source": "gold"},
        ],
    )
    confirmed, both, blind_only, other, unreadable, waiting, staff = ids
    # Pre-filled answers equal to the guess (from before blind leases: NULL; and since),
    # counted once per field however many there are.
    _answer(stores, confirmed, "12.50", None)
    _answer(stores, both, "RM12.5", False)  # the guess, as an amount reads it
    _answer(stores, both, "12.50", True)
    _answer(stores, blind_only, "12.50", True)  # blind: a real check, not a confirmation
    _answer(stores, blind_only, "12.50", True)
    _answer(stores, other, "RM 12.50", None)  # confirmed the guess, but was outvoted
    _answer(stores, other, "12.60", True)
    _answer(stores, other, "12.60", True)
    _answer(stores, unreadable, "", None, kind="unreadable")
    _answer(stores, waiting, "RM 12.50", False)  # not settled yet
    _answer(stores, staff, "RM 12.50", None)  # settled by staff keying it twice, not by votes
    return batch, ids


def test_prefilled_confirmations_count_settled_fields_resting_on_the_guess(
    stores: Stores,
) -> None:
    batch, _ids = _confirmation_batch(stores)
    assert prefilled_confirmations(stores.db, batch_id=batch) == 2
    assert prefilled_confirmations(stores.db, page_ids=[]) == 0


# --- the report ------------------------------------------------------------------------


def test_report_shows_the_source_table_the_confirmation_label_and_escapes_names(
    stores: Stores,
) -> None:
    batch, ids = _confirmation_batch(stores)
    f, s, p = schema.fields, schema.scans, schema.pages
    with stores.db.begin() as conn:
        page = conn.execute(select(f.c.page_id).where(f.c.id == ids[0])).scalar_one()
        scan = conn.execute(select(p.c.scan_id).where(p.c.id == page)).scalar_one()
        # A file name with Markdown in it, and a record of the page, with 597 sen paid.
        conn.execute(s.update().where(s.c.id == scan).values(filename="a|b_*<x>.png"))
        conn.execute(
            insert(schema.records).values(
                page_id=page, batch_id=batch, data="{}", assembled_at=utcnow()
            )
        )
        answer = conn.execute(select(schema.answers.c.id, schema.answers.c.worker_id)).first()
        assert answer is not None
        conn.execute(
            insert(schema.ledger).values(
                worker_id=answer.worker_id,
                answer_id=answer.id,
                task_kind=PayKind.FIELD,
                amount_sen=597,
                batch_id=batch,
                created_at=utcnow(),
            )
        )
    report = batch_report(stores.db, batch)
    assert report.prefilled_confirmations == 2
    assert (report.settled_by_people, report.keyed_by_staff) == (5, 1)
    assert [e.source for e in report.sources][:2] == [ValueSource.OCR, ValueSource.HUMAN]
    assert report.as_dict()["sources"][1]["fields"] == 5
    assert report.as_dict()["cost_per_record"] == "RM 5.97 (597 sen)"
    text = report_markdown(report)
    assert "## Estimated accuracy by source (without ground truth)" in text
    assert "| source | fields | estimated share right | evidence |" in text
    assert (
        "| settled by agreeing workers | 5 | not enough evidence yet "
        "| 5 fields with a model posterior, 20 needed |" in text
    )
    assert "- 2 fields rest partly on a confirmation of the pre-filled OCR guess" in text
    assert (
        "| keyed twice by staff (gold) | 1 | not measured | keyed twice by staff, both keyings "
        "agreed: taken as right, not measured |" in text
    )
    assert "mean share of votes agreeing with the settled value" in text
    assert "Mean agreement" not in text and "mean agreement" not in text
    assert "- per record: RM 5.97 (597 sen) over 1 record built" in text
    assert "| a\\|b\\_\\*\\<x\\>.png | 1 | f004 | 1 |" in text  # the unreadable field
    assert "a|b" not in text


def test_report_gives_an_estimate_with_its_interval(stores: Stores) -> None:
    batch, _page, _ = _seed(stores, "receipt", _people([0.5] * 100))
    text = report_markdown(batch_report(stores.db, batch))
    assert (
        "| settled by agreeing workers | 100 | 50.0% (95% interval 40.2% to 59.8%) "
        "| model estimate from 100 fields' votes |" in text
    )
    assert "- 0 fields rest partly on a confirmation" in text


def test_markdown_text_escapes_what_would_become_markup() -> None:
    assert markdown_text("x|y") == "x\\|y"
    assert markdown_text("**bold** [link](http://e) <b>&amp;\nnext") == (
        "\\*\\*bold\\*\\* \\[link\\](http://e) \\<b\\>\\&amp; next"
    )


def test_demo_summary_says_what_each_figure_counts() -> None:
    from kerani.demo import _cost_line, _score_line
    from kerani.evaluation.accuracy import Score

    line = _score_line(Score(180, 148, 28, 41, 40), 4, "receipt")
    assert line.startswith(
        "against the known truth: 148 of 180 (82.2%) true lines digitised right; the other 32: "
        "28 never found by line segmentation, 4 still waiting for people, 0 settled wrong; "
        "of the 152 lines found, 148 right (97.4%)"
    )
    assert line.endswith("of the 41 auto-accepted fields with a true text, 40 right (97.6%)")
    cost = _cost_line({"cost_sen": 1790, "records": 3, "fields": 230}, "simulated workers")
    assert cost == (
        "cost: RM 17.90 paid to simulated workers; RM 5.97 per record (597 sen) over 3 records; "
        "7.8 sen per field over 230 fields (auto-accepted included)"
    )
