"""`kerani bench ocr` and `kerani dataset from-sroie` on tiny datasets."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerani.cli import app
from kerani.evaluation.ground_truth import read_truth
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs tesseract")

SROIE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sroie"
KEYS = (
    "field_accuracy",
    "cer",
    "auto_accepted_share",
    "auto_accepted_accuracy",
    "pages_per_minute_per_core",
    "tesseract_time_ratio",
)


def test_bench_json_has_the_keys_in_range(tmp_path: Path) -> None:
    generate_dataset(load_template("bantuan_form"), tmp_path, count=2, seed=8)
    result = CliRunner().invoke(
        app,
        ["bench", "ocr", "--dataset", str(tmp_path), "--json", "--template", "bantuan_form"],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)  # the progress bar goes to stderr
    for key in KEYS:
        assert key in figures
    for key in ("field_accuracy", "auto_accepted_share"):
        assert 0.0 <= figures[key] <= 1.0
    accuracy = figures["auto_accepted_accuracy"]
    assert accuracy is None or 0.0 <= accuracy <= 1.0
    assert figures["cer"] >= 0.0
    assert figures["pages_per_minute_per_core"] > 0
    assert figures["tesseract_time_ratio"] > 0
    assert figures["pages"] == 2 and figures["pages_failed"] == 0
    assert figures["alignment_coverage"] == 1.0
    # Clean synthetic forms are read nearly perfectly.
    assert figures["field_accuracy"] >= 0.8
    # The same fields read by bare tesseract, three ways, in the same run.
    for key in (
        "baseline_page_accuracy",
        "baseline_page_scaled_accuracy",
        "baseline_crop_accuracy",
    ):
        assert 0.0 <= figures[key] <= 1.0
    best = max(figures[k] for k in ("baseline_page_accuracy", "baseline_crop_accuracy"))
    assert figures["accuracy_ratio_to_best_baseline"] <= figures["field_accuracy"] / best + 1e-9
    assert figures["line_recall"] is None  # a form: its fields come from the template


def test_the_report_says_so_when_no_baseline_read_anything(tmp_path: Path) -> None:
    from kerani.benchmarks.ocr_bench import format_report, run_bench

    generate_dataset(load_template("bantuan_form"), tmp_path, count=1, seed=8)
    figures = run_bench(tmp_path, template="bantuan_form", time_floor=False, baselines=False)
    figures |= {"baseline_page_accuracy": 0.0, "accuracy_ratio_to_best_baseline": None}
    assert "0.0% once per page;" in format_report(figures)


def test_bench_on_receipts_measures_line_finding() -> None:
    receipts = Path(__file__).resolve().parents[1] / "kerani" / "samples" / "receipts"
    result = CliRunner().invoke(
        app, ["bench", "ocr", "--dataset", str(receipts), "--no-baselines", "--no-time-floor"]
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("line finding:"))
    found, covered = (float(v) for v in re.findall(r"([\d.]+)%", line)[:2])
    # The detector's lines and Tesseract's: nearly every truth line reaches a person.
    assert found >= 90.0 and covered >= 97.0, line


def test_bench_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "ocr", "--dataset", str(tmp_path)])
    assert result.exit_code != 0
    assert "truth.jsonl" in result.output


@pytest.mark.skipif(not SROIE.is_dir(), reason="needs ../shared/data/sroie")
def test_from_sroie_converts_every_receipt(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dataset", "from-sroie", str(SROIE), str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    pages = read_truth(tmp_path / "d")
    assert len(pages) == len(list((SROIE / "img").glob("*.jpg")))
    assert all(p.fields for p in pages)
