"""Calibration from the crowd's own work: which settled fields are evidence, refits that turn
a group's auto-accept on and off again, audit sampling, and where an operator sees it."""

from __future__ import annotations

import importlib
import random
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prefect import Flow
from sqlalchemy import func, insert, select, update
from typer.testing import CliRunner

from kerani.core.settings import CrowdSettings, OcrSettings, Settings, using_settings
from kerani.flows.digitise import route_task
from kerani.microtasks.refit import (
    calibration_history,
    carry_over,
    crowd_samples,
    current_calibration,
    refit_calibration,
)
from kerani.microtasks.routing import route_page
from kerani.ocr.calibration import Calibration, GroupRule, Sample, fit_calibration
from kerani.people.workers import add_person, person_by_code
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page, sign_in_with_code

REPO = Path(__file__).resolve().parents[1]
NO_AUDIT = CrowdSettings(audit_share=0.0, audit_share_young=0.0)


# ---- building settled fields straight in the database ---------------------------------------


def _page(stores: Stores, template: str, guesses: list[tuple[str, str, str, float]]) -> int:
    """A page whose fields all went to people (no calibration, a floor nobody reaches)."""
    return seed_page(stores, guesses, template=template, threshold=101.0)


def _pending_page(stores: Stores, template: str, guesses: list[tuple[str, str, str, float]]) -> int:
    """A page read by the OCR and not routed yet."""
    page_id = _page(stores, template, guesses)
    f, t = schema.fields, schema.tasks
    with stores.db.begin() as conn:
        ids = select(f.c.id).where(f.c.page_id == page_id).scalar_subquery()
        conn.execute(t.delete().where(t.c.field_id.in_(ids)))
        conn.execute(update(f).where(f.c.page_id == page_id).values(status="pending"))
        conn.execute(
            update(schema.pages).where(schema.pages.c.id == page_id).values(status="ocred")
        )
    return page_id


def _fields(stores: Stores, page_id: int) -> dict[str, Any]:
    with stores.db.connect() as conn:
        rows = conn.execute(select(schema.fields).where(schema.fields.c.page_id == page_id)).all()
    return {r.name: r for r in rows}


def _workers(stores: Stores, n: int = 3) -> list[int]:
    return [
        person_by_code(
            stores.db, add_person(stores.db, f"w-{secrets.token_hex(4)}", "worker", practised=True)
        ).id
        for _ in range(n)
    ]


def _settle(
    stores: Stores,
    field_id: int,
    value: str,
    answers: list[tuple[str, str, bool | None]],
    workers: list[int],
    *,
    value_kind: str = "text",
    source: str = "human",
) -> None:
    """Settle a field on `value` with these answers (kind, value, blind) on its task."""
    t, f = schema.tasks, schema.fields
    now = utcnow()
    with stores.db.begin() as conn:
        task_id = conn.execute(select(t.c.id).where(t.c.field_id == field_id)).scalar_one()
        for worker, (kind, text, blind) in zip(workers, answers, strict=False):
            conn.execute(
                insert(schema.answers).values(
                    task_id=task_id,
                    worker_id=worker,
                    kind=kind,
                    value=text,
                    idempotency_key=secrets.token_hex(12),
                    created_at=now,
                    blind=blind,
                )
            )
        conn.execute(t.update().where(t.c.id == task_id).values(status="settled", settled_at=now))
        conn.execute(
            f.update()
            .where(f.c.id == field_id)
            .values(
                status="settled",
                value=value if value_kind == "text" else "",
                value_kind=value_kind,
                source=source,
                answer_count=len(answers),
            )
        )


def _blind_page(stores: Stores, template: str, n: int, workers: list[int]) -> list[int]:
    """A page of `n` lines, each settled on its OCR guess by one blind keying and a confirmation."""
    guesses = [(f"line_{i:03d}", "line", f"LINE {i}", 90.0 + i * 0.1) for i in range(n)]
    fields = _fields(stores, _page(stores, template, guesses))
    for name, _kind, text, _conf in guesses:
        _settle(
            stores, fields[name].id, text, [("value", text, True), ("value", text, False)], workers
        )
    return [fields[name].id for name, *_ in guesses]


# ---- which fields are evidence ---------------------------------------------------------------


def test_only_blind_keyed_audited_and_staff_gold_fields_are_samples(stores: Stores) -> None:
    workers = _workers(stores)
    page = _page(
        stores,
        "tpl_a",
        [
            ("keyed", "line", "CASH", 90.0),
            ("confirmed", "line", "TOTAL 9.00", 80.0),
            ("outvoted", "line", "RM 5", 70.0),
            ("audited", "line", "ABC", 95.0),
            ("unreadable", "line", "QQ", 60.0),
            ("skipped", "line", "SKIP", 65.0),
            ("spaces", "line", "A  B", 85.0),
            ("staff", "line", "G0LD", 75.0),
            ("truth", "line", "TRUTH", 99.0),
            ("date", "date", "1/2/2024", 88.0),
        ],
    )
    f, r = _fields(stores, page), schema.ocr_readings
    with stores.db.begin() as conn:
        # Evidence comes from the guess reading: here the re-OCR read it the same.
        conn.execute(update(r).where(r.c.field_id == f["keyed"].id).values(evidence="agree"))
        conn.execute(
            update(schema.fields).where(schema.fields.c.id == f["audited"].id).values(audit=True)
        )
    _settle(
        stores, f["keyed"].id, "CASH", [("value", "CASH", True), ("value", "CASH", False)], workers
    )
    # Settled only by people confirming the pre-filled guess: no evidence the guess was right.
    _settle(
        stores,
        f["confirmed"].id,
        "TOTAL 9.00",
        [("value", "TOTAL 9.00", False), ("value", "TOTAL 9.00", False)],
        workers,
    )
    # The one blind keying lost: the settled value rests on confirmations alone.
    _settle(
        stores,
        f["outvoted"].id,
        "RM 6",
        [("value", "RM 5", True), ("value", "RM 6", False), ("value", "RM 6", False)],
        workers,
    )
    # An audit counts whatever its answers say of blindness (these are from before 0011).
    _settle(
        stores, f["audited"].id, "ABD", [("value", "ABD", None), ("value", "ABD", None)], workers
    )
    _settle(
        stores,
        f["unreadable"].id,
        "",
        [("unreadable", "", True), ("unreadable", "", False)],
        workers,
        value_kind="unreadable",
    )
    _settle(
        stores,
        f["skipped"].id,
        "SKIP",
        [("skip", "", True), ("value", "SKIP", False), ("value", "SKIP", False)],
        workers,
    )
    _settle(stores, f["spaces"].id, "A B", [("value", "A   B", True)], workers, source="arbitrated")
    # The date's blind answer is written another way: the type's normal form agrees.
    _settle(
        stores,
        f["date"].id,
        "01/02/2024",
        [("value", "01-02-2024", True), ("value", "1/2/2024", False)],
        workers,
    )
    with stores.db.begin() as conn:
        gold = {"status": "gold", "source": "gold", "value_kind": "text"}
        conn.execute(
            update(schema.fields)
            .where(schema.fields.c.id == f["staff"].id)
            .values(**gold, value="GOLD", gold_value="GOLD", gold_origin="staff")
        )
        conn.execute(
            update(schema.fields)
            .where(schema.fields.c.id == f["truth"].id)
            .values(**gold, value="TRUTH", gold_value="TRUTH", gold_origin="truth")
        )
    # The same blind evidence on another template's page is that template's, not this one's.
    other = _fields(stores, _page(stores, "tpl_other", [("x", "line", "X", 99.0)]))
    _settle(stores, other["x"].id, "X", [("value", "X", True)], workers)

    samples = crowd_samples(stores.db, "tpl_a")
    assert sorted(samples, key=lambda s: s.confidence) == [
        Sample("line", "page", 60.0, True, False),  # unreadable, yet the OCR read something
        Sample("line", "page", 75.0, True, False),  # staff gold: GOLD, not G0LD
        Sample("line", "page", 85.0, True, True),  # "A  B" is "A B" once spaces are folded
        Sample("date", "page", 88.0, False, True),  # right, but not in the date format
        Sample("line", "agree", 90.0, True, True),
        Sample("line", "page", 95.0, True, False),  # the audit found ABD, not ABC
    ]
    assert crowd_samples(stores.db, "tpl_other") == [Sample("line", "page", 99.0, True, True)]


# ---- refits ---------------------------------------------------------------------------------


def test_refits_turn_auto_accept_on_with_blind_evidence_and_off_when_audits_fail(
    stores: Stores,
) -> None:
    db, workers = stores.db, _workers(stores, 2)
    assert current_calibration(db, "tpl_b") is None
    assert refit_calibration(db, "tpl_b", target=0.95).changes == "no samples yet"
    _blind_page(stores, "tpl_b", 60, workers)

    first = refit_calibration(db, "tpl_b", target=0.95)
    assert first.refitted and first.fields == 60
    # 60 right in 60: the 95% Wilson bound of the error rate is below 5%, from the lowest score.
    assert first.changes == "*|page: on at 90; line|page: on at 90"
    again = refit_calibration(db, "tpl_b", target=0.95)
    assert not again.refitted and again.fields == 60  # nothing new: nothing stored

    # A new page is routed on the refit: its line is accepted without a person.
    calibration = current_calibration(db, "tpl_b")
    assert calibration is not None and calibration.rules["line|page"].min_confidence == 90.0
    fresh = _pending_page(stores, "tpl_b", [("line_001", "line", "NEW", 95.0)])
    assert route_page(db, fresh, None, calibration, crowd=NO_AUDIT) == (1, 0)
    assert _fields(stores, fresh)["line_001"].status == "auto_accepted"

    # Audits: accepted fields sent to people anyway (all of them, here), who find errors.
    audited = _pending_page(
        stores, "tpl_b", [(f"line_{i:03d}", "line", f"0LD {i}", 99.0) for i in range(5)]
    )
    everything = CrowdSettings(audit_share=1.0, audit_share_young=1.0)
    assert route_page(db, audited, None, calibration, crowd=everything) == (0, 5)
    for row in _fields(stores, audited).values():
        assert row.status == "in_review" and row.audit
        right = row.ocr_text.replace("0", "O")
        _settle(stores, row.id, right, [("value", right, True), ("value", right, True)], workers)

    second = refit_calibration(db, "tpl_b", target=0.95)
    assert second.refitted and second.fields == 65
    assert second.changes == (
        "*|page: off (5 errors in 65 fields at or above 90; audits: 5 wrong of 5); "
        "line|page: off (5 errors in 65 fields at or above 90; audits: 5 wrong of 5)"
    )
    later = _pending_page(stores, "tpl_b", [("line_001", "line", "LATER", 99.9)])
    assert route_page(db, later, None, current_calibration(db, "tpl_b"), crowd=NO_AUDIT) == (0, 1)

    history = calibration_history(db, "tpl_b")
    assert [(h.fields, h.changes) for h in history] == [
        (65, second.changes),
        (60, first.changes),
    ]
    assert history[0].fitted_at > history[1].fitted_at
    now = history[0].calibration.rule_for("line", "page")
    assert now is not None and now.min_confidence is None and now.samples == 65
    assert calibration_history(db, "tpl_other") == []


def test_a_first_refit_says_what_it_changes_from_the_bundled_rule(stores: Stores) -> None:
    db = stores.db
    bundled = current_calibration(db, "bantuan_form")
    assert bundled is not None and not bundled.fitted_on.startswith("crowd")
    _blind_page(stores, "bantuan_form", 10, _workers(stores, 2))
    refit = refit_calibration(db, "bantuan_form", target=0.995)
    # Ten right fields prove nothing either way: what the measured rule accepted stays on.
    assert refit.refitted and refit.changes == "no change"
    assert current_calibration(db, "bantuan_form") == refit.calibration
    assert refit.calibration is not None and refit.calibration.fitted_on.startswith("crowd: 10")
    for key, rule in bundled.rules.items():
        if rule.min_confidence is not None:
            assert refit.calibration.rules[key] == rule, key


def test_a_carried_rule_goes_off_when_a_field_above_its_floor_comes_back_wrong() -> None:
    bundled = fit_calibration(
        [Sample("date", "page", 80.0 + i / 10, True, True) for i in range(100)],
        "t",
        target=0.95,
    )
    assert bundled.rules["*|page"].min_confidence is not None
    floor = bundled.rules["*|page"].min_confidence
    crowd_fit = fit_calibration([], "t", target=0.95)
    quiet = carry_over(bundled, crowd_fit, [Sample("date", "page", floor + 1, True, True)], 40)
    assert quiet.rules == bundled.rules  # too little to judge, nothing wrong: kept
    audited_wrong = [Sample("date", "page", floor + 1, True, False)]
    off = carry_over(bundled, crowd_fit, audited_wrong, 40)
    assert off.rule_for("date", "page") is None  # an audit found an error: off
    below = [Sample("date", "page", floor - 5, True, False)]  # wrong, but under the floor
    assert carry_over(bundled, crowd_fit, below, 40).rules == bundled.rules


# ---- routing --------------------------------------------------------------------------------


def test_without_a_calibration_nothing_is_auto_accepted(settings: Settings, stores: Stores) -> None:
    assert OcrSettings().auto_accept_confidence is None  # the hand-set floor is off by default
    guesses = [("date", "date", "01/02/2024", 99.5), ("postcode", "postcode", "40100", 99.0)]
    page = _pending_page(stores, "no_such_calibration", guesses)
    assert current_calibration(stores.db, "no_such_calibration") is None
    with using_settings(settings):
        assert route_task.fn(page, "no_such_calibration") == (0, 2)
    assert {r.status for r in _fields(stores, page).values()} == {"in_review"}
    # An operator who sets the floor explicitly gets the old rule back.
    page = _pending_page(stores, "no_such_calibration", guesses)
    assert route_page(stores.db, page, 96.0) == (2, 0)


def test_digitise_routes_on_the_latest_refit(settings: Settings, stores: Stores) -> None:
    _blind_page(stores, "tpl_c", 60, _workers(stores, 2))
    refit_calibration(stores.db, "tpl_c", target=0.95)
    quiet = settings.model_copy(update={"crowd": NO_AUDIT})
    page = _pending_page(stores, "tpl_c", [("line_001", "line", "NEW", 95.0)])
    with using_settings(quiet):
        assert route_task.fn(page, "tpl_c") == (1, 0)


def _audit_calibration(accepted: int) -> Calibration:
    rule = GroupRule(min_confidence=50.0, samples=accepted + 100, accepted=accepted, errors=0)
    return Calibration(template="t", target=0.995, z=1.64, rules={"*|page": rule})


@pytest.mark.parametrize(("accepted", "low", "high"), [(1000, 4, 18), (50, 35, 65)])
def test_audit_sampling_sends_about_its_share_to_people(
    stores: Stores, accepted: int, low: int, high: int
) -> None:
    n = 500
    page = _pending_page(stores, "tpl_d", [(f"l{i:03d}", "line", f"T {i}", 99.0) for i in range(n)])
    crowd = CrowdSettings()  # 2% of fields, 10% while the rule was fitted on under 200
    assert (crowd.audit_share, crowd.audit_share_young, crowd.audit_young_below) == (0.02, 0.1, 200)
    cal = _audit_calibration(accepted)
    accepted_n, created = route_page(stores.db, page, None, cal, crowd=crowd, rng=random.Random(3))
    assert accepted_n + created == n and low <= created <= high
    rows = _fields(stores, page).values()
    audited = {r.id for r in rows if r.audit}
    assert audited == {r.id for r in rows if r.status == "in_review"} and len(audited) == created
    with stores.db.connect() as conn:
        tasks = conn.execute(
            select(schema.tasks.c.field_id).where(schema.tasks.c.field_id.in_(audited))
        ).scalars()
        assert set(tasks) == audited  # each audit has its task, like a doubtful field
    # Idempotent: routed fields stay as they are, and no field gets a second task.
    assert route_page(stores.db, page, None, cal, crowd=crowd, rng=random.Random(3)) == (0, 0)
    # The same seed on the same fields draws the same audits.
    again = _pending_page(
        stores, "tpl_d", [(f"l{i:03d}", "line", f"T {i}", 99.0) for i in range(n)]
    )
    route_page(stores.db, again, None, cal, crowd=crowd, rng=random.Random(3))
    drawn = sorted(r.name for r in _fields(stores, again).values() if r.audit)
    assert drawn == sorted(r.name for r in rows if r.audit)


# ---- where people see it ----------------------------------------------------------------------


def _store_refit(stores: Stores, template: str, changes: str) -> None:
    cal = _audit_calibration(10).model_copy(update={"template": template})
    with stores.db.begin() as conn:
        conn.execute(
            insert(schema.calibrations).values(
                template=template,
                fitted_at=utcnow(),
                fields=123,
                rules=cal.model_dump_json(),
                changes=changes,
            )
        )


def test_the_operator_page_lists_refits_and_refuses_workers(
    settings: Settings, stores: Stores
) -> None:
    _store_refit(stores, "<b>tpl</b>", "*|page: on at 50 <script>alert(1)</script>")
    app = create_app(settings, stores)
    for role in ("worker", "agency"):
        client = TestClient(app, follow_redirects=False)
        sign_in_with_code(client, add_person(stores.db, f"someone-{role}", role))
        assert client.get("/operator/calibration").status_code == 403
    assert TestClient(app, follow_redirects=False).get("/operator/calibration").status_code == 303
    operator = TestClient(app, follow_redirects=False)
    sign_in_with_code(operator, add_person(stores.db, "olivia", "operator"))
    page = operator.get("/operator/calibration")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;tpl&lt;/b&gt;" in page.text and ">123<" in page.text
    assert "Refitted from the crowd" in page.text and "50.0" in page.text
    with stores.db.begin() as conn:
        conn.execute(update(schema.workers).values(language="ms"))
    assert "Penentukuran terima automatik" in operator.get("/operator/calibration").text


def test_cli_refits_and_shows_the_history(
    stores: Stores, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kerani.cli import app

    monkeypatch.setenv("KERANI_DB_URL", database_url)
    monkeypatch.setenv("KERANI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KERANI_OCR_CALIBRATION_TARGET", "0.95")
    _blind_page(stores, "tpl_e", 60, _workers(stores, 2))
    runner = CliRunner()
    refit = runner.invoke(app, ["calibration", "refit"])
    assert refit.exit_code == 0, refit.output
    assert "tpl_e: refitted on 60 fields: *|page: on at 90; line|page: on at 90" in refit.output
    again = runner.invoke(app, ["calibration", "refit", "--template", "tpl_e"])
    assert again.exit_code == 0 and "tpl_e: not refitted: nothing new" in again.output
    history = runner.invoke(app, ["calibration", "history", "--template", "tpl_e"])
    # The table may wrap its cells: compare without the whitespace.
    assert history.exit_code == 0 and "line|page:onat90" in "".join(history.output.split())
    with stores.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.calibrations)).scalar() == 1


def test_prefect_yaml_schedules_refresh_quality() -> None:
    from prefect.client.schemas.schedules import IntervalSchedule

    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    (d,) = [d for d in deployments if d["name"] == "refresh-quality"]
    module, name = d["entrypoint"].split(":")
    assert d["entrypoint"] == "kerani.flows.quality:refresh_quality"
    assert isinstance(getattr(importlib.import_module(module), name), Flow)
    (schedule,) = d["schedules"]
    assert IntervalSchedule(interval=schedule["interval"]).interval.total_seconds() <= 15 * 60


@pytest.mark.slow
def test_refresh_quality_flow_refits_and_publishes_the_changes(
    settings: Settings, stores: Stores, prefect_server: None
) -> None:
    from prefect.artifacts import Artifact

    from kerani.flows.quality import ARTIFACT_KEY, refresh_quality

    _blind_page(stores, "tpl_f", 60, _workers(stores, 2))
    tuned = settings.model_copy(update={"ocr": OcrSettings(calibration_target=0.95)})
    with using_settings(tuned):  # what the flow reads: the settings are no parameter
        result = refresh_quality()
    assert result["refitted"] == 1
    assert result["refits"] == [
        {
            "template": "tpl_f",
            "refitted": True,
            "fields": 60,
            "changes": "*|page: on at 90; line|page: on at 90",
        }
    ]
    with using_settings(tuned):
        assert refresh_quality()["refitted"] == 0
    artifact: Any = Artifact.get(key=ARTIFACT_KEY)
    assert artifact is not None and "nothing new since the last refit" in str(artifact.data)
