"""The `kerani` command as a user runs it: people, submit, status, export, and the demo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kerani.cli import app
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template
from kerani.records.exports import read_export

pytestmark = pytest.mark.slow


def test_submit_status_export(env: Path, tmp_path: Path, prefect_server: None) -> None:
    runner = CliRunner()
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=1, seed=2)
    (forms / "pages" / "readme.txt").write_text("not a scan")

    added = runner.invoke(app, ["people", "add", "Siti", "--role", "worker"])
    assert added.exit_code == 0, added.output
    assert re.search(r"access code \S{20,}", added.output)
    again = runner.invoke(app, ["people", "add", "Siti"])
    assert again.exit_code == 7 and "exists already" in again.output
    judge = runner.invoke(app, ["people", "add", "Aminah", "--trusted", "--cleared"])
    assert judge.exit_code == 0 and "worker, trusted, cleared Aminah" in judge.output

    sub = runner.invoke(app, ["submit", str(forms / "pages"), "--template", "bantuan_form"])
    assert sub.exit_code == 0, sub.output
    batch = re.search(r"Batch (\w{32})", sub.output).group(1)  # type: ignore[union-attr]
    assert "1 new pages" in sub.output
    assert "rejected pages/readme.txt" in sub.output

    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0 and batch[:12] in status.output
    assert "readme.txt: not an image or a PDF" in status.output.replace("\n", "")

    exported = runner.invoke(app, ["export", batch[:8]])  # a unique prefix will do
    assert exported.exit_code == 0, exported.output
    out = env / "blobs" / "exports" / batch
    said = " ".join(exported.output.split())
    for label, file in (
        ("records (csv)", "records.csv"),
        ("data dictionary", "dictionary.json"),
        ("data dictionary (csv)", "dictionary.csv"),
        ("audit trail", "audit.csv"),
    ):
        assert (out / file).is_file() and f"{label}: {out / file}" in said, label
    # Nobody has answered yet, and still every document is there with its status.
    frame = read_export((out / "records.csv").read_bytes(), "csv")
    statuses = dict(zip(frame["document"], frame["status"], strict=True))
    assert statuses.pop("pages/readme.txt") == "rejected" and set(statuses.values()) == {"waiting"}

    bad = runner.invoke(app, ["submit", str(forms), "--template", "no_such_form"])
    assert bad.exit_code == 5 and "no template 'no_such_form'" in bad.output

    # Every file refused: nothing was done, and the exit code says so.
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a scan")
    refused = runner.invoke(app, ["submit", str(junk), "--template", "bantuan_form"])
    assert refused.exit_code == 2 and "every file was refused" in refused.output
    assert "rejected junk/notes.txt" in refused.output


def test_demo_with_simulated_crowd(env: Path, prefect_server: None) -> None:
    result = CliRunner().invoke(app, ["demo", "--simulate-crowd", "--forms", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    accuracy = re.findall(
        r"against the known truth: (\d+) of (\d+) \([\d.]+%\) true (?:fields|lines) digitised "
        r"right; the other \d+: \d+ never found by [\w ]+, \d+ still waiting for people, "
        r"\d+ settled wrong",
        text,
    )
    assert len(accuracy) == 2  # forms and receipts
    # The receipts' key fields are scored apart from their lines, against keys.jsonl.
    assert re.search(r"key fields \(company, date, total\): \d+ of 12 \([\d.]+%\) right", text)
    right, true_fields = map(int, accuracy[0])
    assert right >= 0.9 * true_fields  # simulated careful workers on clean synthetic forms
    # The crowd's make-up is named wherever its figures are shown.
    assert re.search(
        r"Simulated workers \(20 careful \(2% of answers wrong, lets 25% of wrong pre-filled",
        text,
    )
    assert re.search(r"records \(csv\): \S+records\.csv", text)
    # Cost per record reads as money, and the sources' estimates are shown beside the truth.
    assert re.search(r"RM \d+\.\d\d per record \(\d+ sen\)", text)
    assert "estimated without the truth: " in text
    assert list((env / "demo" / "blobs" / "exports").glob("*/records.jsonl"))


def test_dataset_synthetic_writes_forms_with_their_truth(tmp_path: Path) -> None:
    out = tmp_path / "forms"
    result = CliRunner().invoke(app, ["dataset", "synthetic", str(out), "--count", "2"])
    assert result.exit_code == 0, result.output
    assert "2 synthetic bantuan_form forms" in result.output
    assert len((out / "truth.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (out / "pages").iterdir()) == ["form_001.png", "form_002.png"]


def test_status_says_when_probation_cannot_be_passed(env: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["people", "add", "Siti"]).exit_code == 0
    shown = " ".join(runner.invoke(app, ["status"]).output.split())
    assert "1 workers on probation and no gold to pass it" in shown
    assert runner.invoke(app, ["people", "add", "Staff", "--proven"]).exit_code == 0
    again = " ".join(runner.invoke(app, ["status"]).output.split())
    assert "1 workers on probation" in again  # the vouched-for one is not on probation


def test_pay_commands_show_rates_statements_and_write_a_payout_once(
    env: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["people", "add", "Siti"]).exit_code == 0
    assert "No task kinds yet" in runner.invoke(app, ["pay", "rates"]).output
    refused = runner.invoke(app, ["pay", "confirm"])
    assert refused.exit_code != 0 and "timed answers" in refused.output
    st = runner.invoke(app, ["pay", "statement", "1", "--week", "2026-W49"])
    assert st.exit_code == 0 and "week 2026-W49" in st.output, st.output
    sheet = tmp_path / "payout.csv"
    made = runner.invoke(app, ["pay", "payout", "--week", "2026-W48", "--out", str(sheet)])
    assert made.exit_code == 0 and "payout 1 (made)" in made.output, made.output
    assert sheet.read_text().startswith("payout_id,period_start,period_end,worker_number")
    again = runner.invoke(app, ["pay", "payout", "--week", "2026-W48", "--out", str(sheet)])
    assert "payout 1 (made before" in again.output
    bad = runner.invoke(app, ["pay", "statement", "1", "--week", "soon"])
    assert bad.exit_code != 0 and "2026-W49" in bad.output and "Traceback" not in bad.output
