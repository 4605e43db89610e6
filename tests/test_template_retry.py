"""Templates as an agency meets them from the shell: a relative path stored once serves the
review page from any folder; a batch whose pages could not be read says why, exits non-zero
when nothing was read, and is retried with another template version, duplicating nothing."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from kerani.cli import app
from kerani.core.settings import Settings
from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import BUNDLED_TEMPLATES, load_template
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import open_stores
from tests.factories import sign_in_with_code

pytestmark = pytest.mark.slow

DIY_RECEIPT = "name: diy_receipt\ntitle: {en: DIY receipt, ms: Resit DIY}\nkind: lines\n"


def one_line(output: str) -> str:
    return " ".join(output.split())


def batch_in(output: str) -> str:
    found = re.search(r"Batch (\w{32})", output)
    assert found is not None, output
    return found.group(1)


def answer_one_task(client: TestClient) -> str:
    """Answer the first task the review page offers; the value typed."""
    page = client.get("/review")
    assert page.status_code == 200, page.text
    task = re.search(r'action="/review/([^"]+)"', page.text)
    assert task is not None, "no task offered"
    fields = dict(re.findall(r'name="(csrf|idempotency_key)" value="([^"]+)"', page.text))
    answer = {**fields, "value": "TYPED BY ANA", "action": "value"}
    assert client.post(f"/review/{task.group(1)}", data=answer).status_code == 303
    return "TYPED BY ANA"


def snapshot(batch_id: str) -> dict[str, Any]:
    """Everything people and the OCR made for a batch's pages, by page."""
    db = open_stores(Settings.load()).db
    p, f, t, a, r = schema.pages, schema.fields, schema.tasks, schema.answers, schema.records
    with db.connect() as conn:
        pages = conn.execute(select(p.c.id).where(p.c.batch_id == batch_id)).scalars().all()
        fields = conn.execute(
            select(f.c.id, f.c.page_id, f.c.name, f.c.status, f.c.value)
            .where(f.c.page_id.in_(pages))
            .order_by(f.c.id)
        ).all()
        tasks = conn.execute(
            select(t.c.id).join(f, f.c.id == t.c.field_id).where(f.c.page_id.in_(pages))
        ).scalars()
        answers = conn.execute(select(a.c.id, a.c.value).order_by(a.c.id)).all()
        records = conn.execute(select(r.c.page_id).where(r.c.batch_id == batch_id)).scalars()
        return {
            "pages": sorted(pages),
            "fields": [tuple(x) for x in fields],
            "tasks": sorted(tasks),
            "answers": [tuple(x) for x in answers],
            "records": sorted(records),
        }


def test_a_template_given_by_relative_path_serves_review_and_export_from_anywhere(
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_server: None,
    sroie_dir: Path,
) -> None:
    agency = tmp_path / "agency"
    (agency / "scans").mkdir(parents=True)
    (agency / "diy_receipt_v2.yaml").write_text(DIY_RECEIPT, encoding="utf-8")
    shutil.copy(sroie_dir / "img" / "000.jpg", agency / "scans")
    runner = CliRunner()
    monkeypatch.chdir(agency)
    sub = runner.invoke(app, ["submit", "scans", "--template", "diy_receipt_v2.yaml"])
    assert sub.exit_code == 0, sub.output
    assert "Stored template diy_receipt:1 from diy_receipt_v2.yaml" in one_line(sub.output)
    batch = batch_in(sub.output)

    # Another folder, where no such file is: the stored version is what is read.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    client = TestClient(create_app(Settings.load()), follow_redirects=False)
    sign_in_with_code(
        client, add_person(open_stores(Settings.load()).db, "ana", "worker", practised=True)
    )
    page = client.get("/review")
    assert page.status_code == 200, page.text
    assert "Text line" in page.text
    exported = runner.invoke(app, ["export", batch[:12]])
    assert exported.exit_code == 0, exported.output
    listed = one_line(runner.invoke(app, ["template", "list"]).output)
    assert re.search(r"diy_receipt .*1 .*diy_receipt_v2\.yaml .* 1", listed), listed
    status = json.loads(runner.invoke(app, ["status", "--json"]).output)
    assert (status[0]["template"], status[0]["template_version"]) == ("diy_receipt", 1)


def test_failed_pages_say_why_and_are_retried_with_another_template_without_duplicates(
    env: Path, tmp_path: Path, prefect_server: None, sroie_dir: Path
) -> None:
    scans = tmp_path / "scans"
    generate_dataset(load_template("bantuan_form"), tmp_path / "forms", count=2, seed=5)
    shutil.copytree(tmp_path / "forms" / "pages", scans)
    shutil.copy(sroie_dir / "img" / "004.jpg", scans / "receipt_004.jpg")
    runner = CliRunner()
    sub = runner.invoke(app, ["submit", str(scans), "--template", "bantuan_form"])
    # Two of three pages were read: a success, which names the page that was not, and why.
    assert sub.exit_code == 0, sub.output
    said = one_line(sub.output)
    assert re.search(
        r"not read \S*receipt_004\.jpg.*does not look like the form 'bantuan_form'", said
    )
    assert "1 page not read" in said and "kerani retry" in said
    batch = batch_in(sub.output)
    status = one_line(runner.invoke(app, ["status"]).output)
    assert re.search(
        r"not read " + batch[:12] + r" \S*receipt_004\.jpg page 1: does not look", status
    )
    report = one_line(runner.invoke(app, ["report", batch[:12]]).output)
    assert re.search(
        r"receipt_004\.jpg .*not read by the OCR .*does not look like the form", report
    )

    # A worker answers one of the forms' tasks: that answer must survive the retry.
    client = TestClient(create_app(Settings.load()), follow_redirects=False)
    sign_in_with_code(
        client, add_person(open_stores(Settings.load()).db, "ana", "worker", practised=True)
    )
    answer_one_task(client)
    before = snapshot(batch)
    assert len(before["pages"]) == 3 and len(before["answers"]) == 1

    retried = runner.invoke(app, ["retry", batch[:12], "--template", "receipt"])
    assert retried.exit_code == 0, retried.output
    assert "1 page read again with receipt:1, 2 pages kept as they were" in one_line(retried.output)
    after = snapshot(batch)
    assert after["pages"] == before["pages"]  # no page made twice
    assert after["answers"] == before["answers"]  # the answer kept, none added
    assert set(before["tasks"]) <= set(after["tasks"])
    assert set(before["records"]) <= set(after["records"])
    old_fields = set(before["fields"])
    kept = [x for x in after["fields"] if x[1] in {x[1] for x in before["fields"]}]
    assert {x[0] for x in kept} == {x[0] for x in old_fields}  # the forms' fields, as they were
    new = [x for x in after["fields"] if x not in old_fields and x[0] not in {y[0] for y in kept}]
    names = [name for _i, _p, name, _s, _v in new]
    # The receipt's key fields, then its text lines.
    assert names[:3] == ["company", "date", "total"]
    assert len(names) > 3 and all(n.startswith("line_") for n in names[3:])

    # Nothing is left to retry: a second retry changes nothing.
    again = runner.invoke(app, ["retry", batch[:12]])
    assert again.exit_code == 0, again.output
    assert "0 pages read again" in one_line(again.output)
    assert snapshot(batch) == after


def test_a_batch_nothing_of_which_was_read_exits_non_zero_and_a_fixed_version_retries_it(
    env: Path, tmp_path: Path, prefect_server: None, sroie_dir: Path
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sroie_dir / "img" / "008.jpg", scans)
    # Version 1 describes the agency's receipts as a fixed form (the bundled one, renamed):
    # no receipt looks like it.
    form = yaml.safe_load((BUNDLED_TEMPLATES / "bantuan_form.yaml").read_text(encoding="utf-8"))
    form["name"] = "diy_doc"
    path = tmp_path / "diy_doc.yaml"
    path.write_text(yaml.safe_dump(form), encoding="utf-8")
    runner = CliRunner()
    sub = runner.invoke(app, ["submit", str(scans), "--template", str(path)])
    assert sub.exit_code == 2, sub.output
    said = one_line(sub.output)
    assert "nothing read: not one of the batch's 1 page could be read" in said
    assert "does not look like the form 'diy_doc'" in said
    batch = batch_in(sub.output)

    # A template that cannot be used is one line, before any flow run or progress bar.
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        yaml.safe_dump({**form, "fields": [{**form["fields"][0], "type": "telephone"}]})
    )
    refused = runner.invoke(app, ["submit", str(scans), "--template", str(broken)])
    assert refused.exit_code == 5
    assert refused.output.strip().splitlines() == [
        "error: template 'diy_doc': field 'full_name' has unknown type 'telephone' (known: "
        "text, number, amount, date, ic_number, phone, postcode, choice, checkbox, signature)"
    ]

    # Version 2: template-free lines.
    path.write_text(DIY_RECEIPT.replace("diy_receipt", "diy_doc"), encoding="utf-8")
    added = runner.invoke(app, ["template", "add", str(path)])
    assert added.exit_code == 0 and "Stored diy_doc:2" in added.output
    retried = runner.invoke(app, ["retry", batch[:12], "--template", "diy_doc:2"])
    assert retried.exit_code == 0, retried.output
    db = open_stores(Settings.load()).db
    p, f = schema.pages, schema.fields
    with db.connect() as conn:
        page = conn.execute(select(p).where(p.c.batch_id == batch)).one()
        lines = conn.execute(
            select(func.count()).select_from(f).where(f.c.page_id == page.id)
        ).scalar_one()
        version = conn.execute(
            select(schema.templates.c.version).where(schema.templates.c.id == page.template_id)
        ).scalar_one()
    assert page.status in ("routed", "complete") and page.error is None and version == 2
    assert lines >= 10  # a receipt's text lines
    shown = runner.invoke(app, ["template", "show", "diy_doc:1"]).output
    assert "kind: form" in shown  # version 1 is kept as it was
