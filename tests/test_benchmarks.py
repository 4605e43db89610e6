"""The crowd and queue benchmarks run on small inputs and print sane figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from kerani.benchmarks import crowd_bench, load_bench, queue_bench, ui_bench
from kerani.core.vocabulary import Role
from kerani.people.workers import add_person, person_by_code
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.conftest import POSTGRES_ADMIN_URL

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[1] / "kerani" / "samples"

CROWD_KEYS = {
    "final_accuracy",
    "earnings_per_hour_median_careful",
    "earnings_per_hour_spammer",
    "answers_per_field",
    "keystrokes_per_field",
    "human_seconds_per_field",
    "human_share",
    "auto_accepted_share",
    "auto_accepted_accuracy",
    "by_source",
    "ocr_only_accuracy",
    "double_keying_accuracy",
    "double_keying_answers_per_field",
    "double_keying_keystrokes_per_field",
    "adversarial_workers_quarantined",
}


def test_crowd_bench_on_the_sample_receipts_in_both_modes() -> None:
    # 30 simulated workers: each sees at most ten lines of a receipt, and every line needs
    # two independent looks, besides the answers new workers give on probation.
    both = crowd_bench.run(
        SAMPLES / "receipts", workers=30, seed=1, calibrate_share=0.3, production=True
    )
    production, truth_fed = both["production"], both["truth_fed"]
    assert production["gold_made"].get("staff", 0) > 0  # no truth: gold from staff keying
    assert "crowd" in production["gold_made"]
    for figures in (production, truth_fed):
        assert set(figures) >= CROWD_KEYS
        for key in ("final_accuracy", "human_share", "ocr_only_accuracy"):
            assert 0.0 <= figures[key] <= 1.0, key
        assert figures["fields"] > 50 and figures["unsettled_fields"] == 0
        # The crowd beats the OCR alone; spammers and junk typers never pass probation, so
        # they settle nothing (paused, or still on probation when the work runs out).
        assert figures["final_accuracy"] > figures["ocr_only_accuracy"]
        assert figures["adversarial_workers_proven"] == 0
        assert figures["adversarial_most_fields_settled_with_their_vote"] == 0
        assert figures["adversarial_workers_quarantined"] >= 1
        assert figures["double_keying_answers_per_field"] >= 2.0
        # Under the rates proposed from this run's times, a median careful worker earns at
        # least the floor per hour worked; a spammer, whose pay the checks void, far less.
        assert figures["earnings_per_hour_median_careful"] >= figures["pay_floor_per_hour"]
        assert (figures["earnings_per_hour_spammer"] or 0) < figures["pay_floor_per_hour"] / 2
        human = figures["by_source"]["human"]
        assert human["fields"] > 0 and 0.0 <= human["actual_accuracy"] <= 1.0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_queue_bench_small(database_url: str) -> None:
    figures = queue_bench.run(clients=8, pages=4, fields_per_page=10, rounds=2)
    assert figures["sqlite"]["ops"] == figures["postgres"]["ops"] == 40
    assert figures["postgres_ops_per_s"] > 0 and figures["postgres_floor_ratio"] > 0
    assert len(figures["postgres"]["floor_ratios"]) == 2
    assert figures["postgres_p99_ms"] >= figures["postgres_p50_ms"]


def test_ui_actions_model() -> None:
    # A right guess: Enter alone one by one, nothing at all in a column.
    assert ui_bench.field_actions("TOTAL 5.00", "TOTAL 5.00", "single").total == 1
    assert ui_bench.field_actions("TOTAL 5.00", "TOTAL 5.00", "column").total == 0
    # One wrong character: a tap at it, a backspace, the right key (+ Enter, or + tap open).
    fix = ui_bench.field_actions("TOTAL 5.0O", "TOTAL 5.00", "single")
    assert (fix.clicks, fix.keys) == (1, 3)
    assert ui_bench.field_actions("TOTAL 5.0O", "TOTAL 5.00", "column").total == 4
    # A guess that is all wrong is cheaper typed over than edited.
    assert ui_bench.correction("XXXXXXXX", "AB") == ui_bench.Actions(0, 2)


def test_ui_bench_on_a_sample_receipt() -> None:
    figures = ui_bench.run(SAMPLES / "receipts", pages=1, snippets=3, think_seconds=0.5)
    assert 0 < figures["page_weight_kb_max"] < 100
    assert figures["snippet_bytes_median"] > 0
    # The browser typed each snippet by the model's actions and got exactly the truth.
    assert figures["snippets_typed_right_in_browser"] == figures["snippets_typed_in_browser"] == 6
    # Next snippets came from the reserve, not from a page load, on both slow profiles.
    assert figures["next_snippets_without_page_load"] == 6
    assert figures["first_snippet_ms_slow3g"] >= ui_bench.NETWORKS["slow3g"]["latency"]
    assert figures["keystrokes_per_field_single"] < figures["typing_from_scratch_per_field"]
    # Measured from the rendered pages at 360x640: legible lines, finger-sized controls.
    assert 0 < figures["snippet_text_px_measured"] <= 6  # lines of "***" say nothing
    assert figures["snippet_text_px_min"] >= 24
    assert figures["touch_target_px_min"] >= 44, figures["touch_target_px_by_screen"]
    assert figures["column_rows_per_screen"] > 0
    # Every answer typed offline (a reload offline among them) reached the server.
    assert figures["offline_answers_kept"] == figures["offline_answers_typed"] == 10


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_load_bench_small(database: str, request: pytest.FixtureRequest) -> None:
    if database == "postgresql" and not request.getfixturevalue("postgres_available"):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (outside CI)")
    url = POSTGRES_ADMIN_URL if database == "postgresql" else "sqlite"
    figures = load_bench.run(workers=5, seconds=3, database=url, processes=2, warmup_s=1)
    assert figures["database"] == database and figures["errors"] == 0, figures
    # Every answer the server acknowledged is in the database, once; no task was leased
    # to two workers at once.
    assert figures["answers_acknowledged"] > 0
    assert figures["answers_stored"] == figures["answers_acknowledged"]
    assert figures["lost_answers"] == figures["answers_stored_twice"] == 0
    assert figures["double_assignments"] == 0
    kinds = [figures[k]["requests"] for k in load_bench.KINDS]
    assert sum(kinds) == figures["requests"] > 0
    assert figures["p99_ms"] >= figures["p50_ms"] > 0


def test_kerani_bench_load_prints_one_json_object() -> None:
    from typer.testing import CliRunner

    from kerani.cli import app

    args = ["bench", "load", "--workers", "2", "--seconds", "1", "--warmup", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)  # the progress bar went to stderr
    assert figures["workers"] == 2 and figures["lost_answers"] == 0


def test_double_assignments_are_claims_while_another_worker_holds_the_task(
    stores: Stores,
) -> None:
    a = add_person(stores.db, "A", Role.WORKER, practised=True)
    b = add_person(stores.db, "B", Role.WORKER, practised=True)
    ids = [person_by_code(stores.db, code).id for code in (a, b)]
    rows = [
        ("claim", ids[0], "t1"),
        ("answer", ids[0], "t1"),
        ("claim", ids[1], "t1"),  # after A answered: fine
        ("claim", ids[0], "t2"),
        ("claim", ids[1], "t2"),  # while A holds it: doubled
        ("answer", ids[1], "t2"),
    ]
    with stores.db.begin() as conn:
        conn.execute(
            sa.insert(schema.audit_log),
            [{"at": utcnow(), "action": x, "worker_id": w, "task_id": t} for x, w, t in rows],
        )
    assert load_bench.double_assignments(stores.db) == 1


@pytest.mark.slow
def test_bench_scale_reads_every_page_in_each_configuration(prefect_server: None) -> None:
    from kerani.benchmarks.scale_bench import run

    figures = run(pages=2, dask_workers=[1], threads=[1])
    assert set(figures) == {"pages", "threads_1", "dask_1_workers"}
    for name in ("threads_1", "dask_1_workers"):
        got = figures[name]
        assert got["pages_read"] == 2
        # The steady pace leaves the start-up out: never slower than the whole run's.
        assert got["steady_pages_per_minute"] >= got["pages_per_minute"] > 0
