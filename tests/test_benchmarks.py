"""The crowd and queue benchmarks run on small inputs and print sane figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import crowd_bench, queue_bench

pytestmark = pytest.mark.slow
SAMPLES = Path(__file__).resolve().parents[1] / "kerani" / "samples"

CROWD_KEYS = {
    "final_accuracy",
    "answers_per_field",
    "keystrokes_per_field",
    "human_share",
    "ocr_only_accuracy",
    "double_keying_accuracy",
    "double_keying_answers_per_field",
    "double_keying_keystrokes_per_field",
}


def test_crowd_bench_on_the_sample_receipts() -> None:
    figures = crowd_bench.run(SAMPLES / "receipts", workers=12, seed=1, calibrate_share=0.3)
    assert set(figures) >= CROWD_KEYS
    for key in ("final_accuracy", "human_share", "ocr_only_accuracy", "double_keying_accuracy"):
        assert 0.0 <= figures[key] <= 1.0, key
    assert figures["fields"] > 50 and figures["unsettled_fields"] == 0
    # The crowd beats the OCR alone, and its keystrokes beat typing every field from scratch.
    assert figures["final_accuracy"] > figures["ocr_only_accuracy"]
    assert figures["keystrokes_per_field"] < figures["typing_from_scratch_keystrokes_per_field"]
    assert figures["double_keying_answers_per_field"] >= 2.0


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_queue_bench_small(database_url: str) -> None:
    figures = queue_bench.run(clients=8, pages=4, fields_per_page=10)
    assert figures["sqlite"]["ops"] == figures["postgres"]["ops"] == 40
    assert figures["postgres_ops_per_s"] > 0 and figures["postgres_floor_ratio"] > 0
    assert figures["postgres_p99_ms"] >= figures["postgres_p50_ms"]
