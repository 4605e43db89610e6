"""Gold made in production, with no truth: staff keying blind twice (library, CLI, operator
page) and the crowd's harvest; only from fields a template lets be gold, never restricted."""

from __future__ import annotations

import csv
import io
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import insert, select
from typer.testing import CliRunner

from kerani.cli import app as cli_app
from kerani.core.errors import ConflictError, ForbiddenError, TemplateError
from kerani.core.settings import Settings
from kerani.core.vocabulary import FieldStatus, GoldOrigin, Sensitivity, ValueSource
from kerani.forms.templates import load_template, parse_template
from kerani.microtasks.gold import (
    gold_counts,
    harvest_gold,
    keyer_named,
    keying_disagreements,
    make_gold,
    record_keying,
    sample_for_keying,
)
from kerani.people.workers import add_person
from kerani.records.assembly import pages_to_reassemble
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page, sign_in_with_code

OCR_GUESS = "Q9OCRGUESS"  # what the OCR read: the blind page must never show it
WORKER_SAYS = "Q9WORKERSAYS"  # what a worker answered: never shown either
FIELDS = [
    ("postcode", "postcode", OCR_GUESS, 40.0),
    ("city", "text", OCR_GUESS, 40.0),
    ("ic", "ic_number", OCR_GUESS, 40.0),
]
SENSITIVITY = {
    "postcode": Sensitivity.PUBLIC,
    "city": Sensitivity.PERSONAL,
    "ic": Sensitivity.RESTRICTED,
}


def template_file(tmp_path: Path, gold: str | None) -> str:
    """A form template with a public, a personal and a restricted field; its path."""
    line = f"gold_sensitivity: {gold}\n" if gold is not None else ""
    text = (
        f"name: gold_{secrets.token_hex(3)}\n"
        "title: {en: Gold test, ms: Ujian emas}\n"
        "kind: form\n"
        "page_size: [100, 100]\n"
        f"{line}"
        "fields:\n"
        "  - {name: postcode, label: {en: 'Post <b>code</b>', ms: Poskod}, type: postcode,"
        " box: [0, 0, 50, 8], sensitivity: public}\n"
        "  - {name: city, label: {en: City, ms: Bandar}, type: text,"
        " box: [0, 10, 50, 18], sensitivity: personal}\n"
        "  - {name: ic, label: {en: MyKad, ms: MyKad}, type: ic_number,"
        " box: [0, 20, 50, 28], sensitivity: restricted}\n"
    )
    path = tmp_path / f"gold_{secrets.token_hex(3)}.yaml"
    path.write_text(text)
    return str(path)


def seed(stores: Stores, template: str) -> dict[str, int]:
    """A routed page of `template` whose fields all wait for people; name -> field id."""
    page_id = seed_page(stores, FIELDS, template=template)
    f = schema.fields
    with stores.db.begin() as conn:
        for name, sensitivity in SENSITIVITY.items():
            conn.execute(
                f.update()
                .where(f.c.page_id == page_id, f.c.name == name)
                .values(sensitivity=sensitivity)
            )
        rows = conn.execute(select(f.c.name, f.c.id).where(f.c.page_id == page_id)).all()
    return {r.name: int(r.id) for r in rows}


def field_row(stores: Stores, field_id: int) -> Any:
    with stores.db.connect() as conn:
        return conn.execute(select(schema.fields).where(schema.fields.c.id == field_id)).one()


def task_of(stores: Stores, field_id: int) -> Any:
    t = schema.tasks
    with stores.db.connect() as conn:
        return conn.execute(select(t).where(t.c.field_id == field_id)).one()


def operator(stores: Stores, name: str = "olivia") -> tuple[int, str]:
    code = add_person(stores.db, name, "operator")
    return keyer_named(stores.db, name), code


def person(stores: Stores, name: str, role: str = "worker", **flags: bool) -> int:
    add_person(stores.db, name, role, practised=True)
    w = schema.workers
    with stores.db.begin() as conn:
        if flags:
            conn.execute(w.update().where(w.c.name == name).values(**flags))
        return int(conn.execute(select(w.c.id).where(w.c.name == name)).scalar_one())


def settle(stores: Stores, field_id: int, value: str, source: str = ValueSource.HUMAN) -> None:
    """Settle a field as the crowd would have (its task too)."""
    with stores.db.begin() as conn:
        conn.execute(
            schema.fields.update()
            .where(schema.fields.c.id == field_id)
            .values(status="settled", value=value, value_kind="text", source=source)
        )
        conn.execute(
            schema.tasks.update()
            .where(schema.tasks.c.field_id == field_id)
            .values(status="settled")
        )


def answer(stores: Stores, field_id: int, worker_id: int, value: str, blind: bool | None) -> None:
    """An answer on the field's task, shown blind or pre-filled (None: before blind was kept)."""
    task_id = task_of(stores, field_id).id
    with stores.db.begin() as conn:
        conn.execute(
            insert(schema.answers).values(
                task_id=task_id,
                worker_id=worker_id,
                kind="value",
                value=value,
                idempotency_key=secrets.token_hex(8),
                created_at=utcnow(),
                prefilled="" if blind else OCR_GUESS,
                blind=blind,
            )
        )


# ---- templates -------------------------------------------------------------------------------


def test_gold_sensitivity_defaults_to_public_and_refuses_restricted(tmp_path: Path) -> None:
    assert load_template(template_file(tmp_path, None)).gold_sensitivity == ["public"]
    both = load_template(template_file(tmp_path, "[public, personal]"))
    assert both.may_become_gold("personal") and not both.may_become_gold("restricted")
    with pytest.raises(TemplateError, match="gold_sensitivity: restricted fields never"):
        parse_template(Path(template_file(tmp_path, "[public, restricted]")).read_text(), "t")


# ---- staff keying ----------------------------------------------------------------------------


def test_truth_gold_keeps_its_value_and_origin(stores: Stores, tmp_path: Path) -> None:
    ids = seed(stores, template_file(tmp_path, None))
    make_gold(stores.db, {ids["postcode"]: "40100"})
    row = field_row(stores, ids["postcode"])
    assert (row.status, row.gold_value, row.gold_origin) == ("gold", "40100", GoldOrigin.TRUTH)


def test_agreeing_double_keying_makes_staff_gold_and_settles_the_open_field(
    stores: Stores, tmp_path: Path
) -> None:
    ids = seed(stores, template_file(tmp_path, "[public, personal]"))
    olivia, _ = operator(stores)
    page_id = int(field_row(stores, ids["postcode"]).page_id)
    first = record_keying(stores.db, ids["postcode"], 1, olivia, "value", "40100")
    assert (first.complete, first.agreed, first.gold_value) == (False, None, None)
    assert field_row(stores, ids["postcode"]).gold_value is None  # one round is not gold
    with pytest.raises(ConflictError, match="round 1 is keyed already"):
        record_keying(stores.db, ids["postcode"], 1, olivia, "value", "40100")
    # The second round agrees as a postcode reads (a stray space), in either order of rounds.
    second = record_keying(stores.db, ids["postcode"], 2, olivia, "value", "40 100")
    assert (second.agreed, second.gold_value, second.settled) == (True, "40100", True)
    row = field_row(stores, ids["postcode"])
    assert (row.gold_value, row.gold_origin) == ("40100", GoldOrigin.STAFF)
    assert (row.status, row.value, row.value_kind, row.source) == (
        FieldStatus.SETTLED,
        "40100",
        "text",
        ValueSource.GOLD,
    )
    task = task_of(stores, ids["postcode"])
    assert task.status == "settled" and task.settled_at is not None and task.lease_worker_id is None
    assert second.completed_page_id is None  # city is still waiting: the page is not done
    assert pages_to_reassemble(stores.db) == []
    # The page's other open field (city) settles the same way: now the page is complete.
    record_keying(stores.db, ids["city"], 2, olivia, "value", "Shah  Alam")
    last = record_keying(stores.db, ids["city"], 1, olivia, "value", "Shah Alam")
    assert last.gold_value == "Shah Alam" and last.completed_page_id is None  # ic still open
    settle(stores, ids["ic"], "500101-14-5555")
    assert pages_to_reassemble(stores.db) == [page_id]
    assert gold_counts(stores.db).by_origin == {"truth": 0, "staff": 2, "crowd": 0}
    # Workers do not key gold: their keying would make the answers that test them.
    worker = person(stores, "wan")
    with pytest.raises(ForbiddenError, match="only operators key gold"):
        record_keying(stores.db, ids["postcode"], 1, worker, "value", "40100")


def test_disagreeing_keying_makes_no_gold(stores: Stores, tmp_path: Path) -> None:
    ids = seed(stores, template_file(tmp_path, None))
    olivia, _ = operator(stores)
    record_keying(stores.db, ids["postcode"], 1, olivia, "value", "40100")
    outcome = record_keying(stores.db, ids["postcode"], 2, olivia, "value", "40700")
    assert (outcome.complete, outcome.agreed, outcome.gold_value) == (True, False, None)
    row = field_row(stores, ids["postcode"])
    assert (row.gold_value, row.status) == (None, FieldStatus.IN_REVIEW)
    assert task_of(stores, ids["postcode"]).status == "open"  # people still settle it
    (d,) = keying_disagreements(stores.db)
    assert (d.field_id, d.first, d.second) == (
        ids["postcode"],
        ("value", "40100"),
        ("value", "40700"),
    )
    counts = gold_counts(stores.db)
    assert counts.disagreements == 1 and counts.by_origin["staff"] == 0
    # Fully keyed: it is not sampled again (a third keying is not how disagreement ends).
    assert ids["postcode"] not in sample_for_keying(stores.db, 10)


def test_only_fields_the_template_allows_are_sampled_never_restricted(
    stores: Stores, tmp_path: Path
) -> None:
    public_only = seed(stores, template_file(tmp_path, None))
    personal_too = seed(stores, template_file(tmp_path, "[public, personal]"))
    sampled = set(sample_for_keying(stores.db, 50))
    assert sampled == {public_only["postcode"], personal_too["postcode"], personal_too["city"]}
    assert sample_for_keying(stores.db, 2, seed=3) == sample_for_keying(stores.db, 2, seed=3)
    olivia, _ = operator(stores)
    with pytest.raises(ForbiddenError, match="restricted"):
        record_keying(stores.db, personal_too["ic"], 1, olivia, "value", "500101-14-5555")
    with pytest.raises(ForbiddenError, match="gold_sensitivity"):
        record_keying(stores.db, public_only["city"], 1, olivia, "value", "Shah Alam")


# ---- crowd harvest ---------------------------------------------------------------------------


def test_restricted_and_unallowed_fields_are_never_harvested(
    stores: Stores, tmp_path: Path
) -> None:
    public_only = seed(stores, template_file(tmp_path, None))
    personal_too = seed(stores, template_file(tmp_path, "[public, personal]"))
    for ids in (public_only, personal_too):
        settle(stores, ids["postcode"], "40100", ValueSource.ARBITRATED)
        settle(stores, ids["city"], "Shah Alam", ValueSource.ARBITRATED)
        settle(stores, ids["ic"], "500101-14-5555", ValueSource.ARBITRATED)
    assert harvest_gold(stores.db) == 3
    gold = {
        i
        for ids in (public_only, personal_too)
        for i in ids.values()
        if field_row(stores, i).gold_value is not None
    }
    # The personal field only where its template allows personal; the restricted one never.
    assert gold == {public_only["postcode"], personal_too["postcode"], personal_too["city"]}
    assert field_row(stores, personal_too["city"]).gold_origin == GoldOrigin.CROWD
    assert harvest_gold(stores.db) == 0  # nothing twice


def test_harvest_needs_two_proven_workers_keying_blind_and_agreeing(
    stores: Stores, tmp_path: Path
) -> None:
    template = template_file(tmp_path, "[public, personal]")
    proven = [person(stores, f"p{i}", proven=True) for i in range(3)]
    new = person(stores, "new")  # on probation
    paused = person(stores, "paused", proven=True, quarantined=True)
    cases = {
        "two proven blind": [(proven[0], "40100", True), (proven[1], "40 100", True)],
        "proven + probation": [(proven[0], "40100", True), (new, "40100", True)],
        "two prefilled": [(proven[0], "40100", False), (proven[1], "40100", False)],
        "before blind was kept": [(proven[0], "40100", None), (proven[1], "40100", None)],
        "one quarantined": [(proven[0], "40100", True), (paused, "40100", True)],
        "one disagrees": [(proven[0], "40100", True), (proven[1], "40700", True)],
    }
    fields = {}
    for case, answers in cases.items():
        fid = seed(stores, template)["postcode"]
        for worker, value, blind in answers:
            answer(stores, fid, worker, value, blind)
        settle(stores, fid, "40100")
        fields[case] = fid
    # A third proven worker agreeing blind makes the "one disagrees" field gold at 2 of 3.
    assert harvest_gold(stores.db, min_agreeing=3) == 0
    made = harvest_gold(stores.db)
    gold = {case for case, fid in fields.items() if field_row(stores, fid).gold_value}
    assert (made, gold) == (1, {"two proven blind"})
    assert field_row(stores, fields["two proven blind"]).gold_value == "40100"
    answer(stores, fields["one disagrees"], proven[2], "40100", True)
    assert harvest_gold(stores.db) == 1


# ---- the operator page -----------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings, stores: Stores) -> TestClient:
    return TestClient(create_app(settings, stores), follow_redirects=False)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def shown_field(page: str) -> int:
    found = re.search(r'name="field_id" value="(\d+)"', page)
    assert found is not None, page
    return int(found.group(1))


def test_operator_page_keys_blind_and_refuses_workers_and_agencies(
    settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    ids = seed(stores, template_file(tmp_path, None))  # only the postcode may be gold
    worker = person(stores, "wan")
    answer(stores, ids["postcode"], worker, WORKER_SAYS, True)
    codes = {
        role: add_person(stores.db, f"{role}-1", role, practised=True)
        for role in ("worker", "agency")
    }
    for role, code in codes.items():
        other = TestClient(create_app(settings, stores), follow_redirects=False)
        sign_in_with_code(other, code)
        refused = other.get("/operator/gold")
        assert refused.status_code == 403 and "needs the role operator" in refused.text, role
        assert other.get(f"/operator/gold/snippets/{ids['postcode']}").status_code == 403
        data = {"csrf": "x", "field_id": str(ids["postcode"]), "value": "40100"}
        refused = other.post("/operator/gold", data=data)
        assert refused.status_code == 403 and "needs the role operator" in refused.text
    assert OCR_GUESS not in refused.text

    first, second = (
        TestClient(create_app(settings, stores), follow_redirects=False) for _ in range(2)
    )
    for n, c in enumerate((first, second)):
        assert sign_in_with_code(c, operator(stores, f"op{n}")[1]).status_code == 303
    page = first.get("/operator/gold")
    assert page.status_code == 200
    html = page.text
    assert shown_field(html) == ids["postcode"]
    # Blind: an empty box, neither the OCR's guess nor a worker's answer anywhere.
    assert re.search(r'<input type="text" id="value" name="value" value=""', html)
    assert OCR_GUESS not in html and WORKER_SAYS not in html
    assert "Post &lt;b&gt;code&lt;/b&gt;" in html and "<b>code" not in html  # escaped
    assert f'src="/operator/gold/snippets/{ids["postcode"]}"' in html
    image = first.get(f"/operator/gold/snippets/{ids['postcode']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["cache-control"] == "private, no-store"
    assert first.get(f"/operator/gold/snippets/{ids['ic']}").status_code == 403  # restricted
    a = schema.audit_log
    with stores.db.connect() as conn:
        viewed = conn.execute(select(a.c.field_id).where(a.c.action == "view")).scalars().all()
    assert viewed == [ids["postcode"]]

    form = {"csrf": csrf_of(html), "field_id": str(ids["postcode"]), "value": "40100"}
    assert first.post("/operator/gold", data=form | {"csrf": "forged"}).status_code == 403
    done = first.post("/operator/gold", data=form)
    assert done.status_code == 303 and done.headers["location"] == "/operator/gold?done=recorded"
    # The same operator may not key the second round; the page has nothing else for them.
    assert first.post("/operator/gold", data=form).status_code == 409
    assert 'id="nothing"' in first.get("/operator/gold").text

    # Another operator gets the field waiting for its second round, still blind.
    html = second.get("/operator/gold").text
    assert shown_field(html) == ids["postcode"] and "40100" not in html
    again = {"csrf": csrf_of(html), "field_id": str(ids["postcode"]), "value": "40100"}
    done = second.post("/operator/gold", data=again)
    assert done.headers["location"] == "/operator/gold?done=gold"
    page = second.get("/operator/gold?done=gold").text
    assert "the field is now gold" in page
    assert re.search(r'id="gold-staff">1<', page)
    row = field_row(stores, ids["postcode"])
    assert (row.gold_value, row.gold_origin, row.status) == ("40100", "staff", "settled")
    with stores.db.connect() as conn:
        k = schema.gold_keyings
        keyers = dict(conn.execute(select(k.c.round, k.c.keyer_id)).tuples().all())
    assert keyers == {1: keyer_named(stores.db, "op0"), 2: keyer_named(stores.db, "op1")}


def test_operator_page_speaks_malay(settings: Settings, stores: Stores, tmp_path: Path) -> None:
    seed(stores, template_file(tmp_path, None))
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in_with_code(client, operator(stores)[1])
    token = csrf_of(client.get("/operator/gold").text)
    chosen = client.post("/language", data={"lang": "ms", "next": "/operator/gold", "csrf": token})
    assert chosen.headers["location"] == "/operator/gold"
    html = client.get("/operator/gold").text
    assert "Kunci masuk emas" in html and "Poskod" in html and "Gold keying" not in html


# ---- the CLI ---------------------------------------------------------------------------------


def test_cli_sample_and_add_round_trip_names_a_bad_row(
    settings: Settings, stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERANI_DATA_DIR", str(settings.core.data_dir))
    monkeypatch.setenv("KERANI_DB_URL", settings.database_url)
    monkeypatch.setenv("KERANI_BLOB_URL", settings.blob_url)
    ids = seed(stores, template_file(tmp_path, "[public, personal]"))
    # Real snippets are WebP: the sheet's pictures are PNG all the same.
    webp = io.BytesIO()
    Image.new("L", (40, 12), 128).save(webp, format="WEBP")
    stores.blobs.put(field_row(stores, ids["city"]).snippet_key, webp.getvalue())
    operator(stores, "Olivia")
    runner = CliRunner()
    out = tmp_path / "keying"

    sampled = runner.invoke(cli_app, ["gold", "sample", "--count", "5", "--out", str(out)])
    assert sampled.exit_code == 0, sampled.output
    with (out / "keying.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {int(r["field_id"]) for r in rows} == {ids["postcode"], ids["city"]}  # not ic
    assert list(rows[0]) == ["field_id", "snippet", "field_type", "kind", "value"]
    assert all(r["kind"] == r["value"] == "" for r in rows)  # blind: nothing pre-filled
    assert OCR_GUESS not in (out / "keying.csv").read_text()
    for r in rows:
        assert (out / r["snippet"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    truth = {str(ids["postcode"]): "40100", str(ids["city"]): "Shah Alam"}

    def copy(name: str, extra: list[list[str]], kinds: dict[str, str] | None = None) -> Path:
        path = tmp_path / name
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["field_id", "snippet", "field_type", "kind", "value"])
            for r in rows:
                kind = (kinds or {}).get(r["field_id"], "")
                writer.writerow(
                    [r["field_id"], r["snippet"], r["field_type"], kind, truth[r["field_id"]]]
                )
            writer.writerows(extra)
        return path

    one = copy("round1.csv", [])
    bad = [["999999", "x.png", "text", "", "ghost"], [str(ids["city"]), "", "text", "maybe", "x"]]
    two = copy("round2.csv", bad)
    added = runner.invoke(cli_app, ["gold", "add", "--round", "1", "--keyer", "Olivia", str(one)])
    assert added.exit_code == 0, added.output
    assert "2 keyings recorded (0 new gold" in added.output
    added = runner.invoke(cli_app, ["gold", "add", "--round", "2", "--keyer", "Olivia", str(two)])
    assert added.exit_code == 0, added.output
    output = added.output.replace("\n", "")
    assert f"{two} row 4: no field 999999" in output
    assert f"{two} row 5: field {ids['city']}: kind must be one of" in output
    assert "2 new gold" in output
    assert field_row(stores, ids["city"]).gold_value == "Shah Alam"
    # Nothing new in the same copy again: every row refused, and a non-zero exit.
    replay = runner.invoke(cli_app, ["gold", "add", "--round", "2", "--keyer", "Olivia", str(two)])
    assert replay.exit_code == 2 and "nothing recorded" in replay.output
    nobody = runner.invoke(cli_app, ["gold", "add", "--round", "1", "--keyer", "Nobody", str(one)])
    assert nobody.exit_code == 2 and "no operator called 'Nobody'" in nobody.output
    listed = runner.invoke(cli_app, ["gold", "list"])
    assert listed.exit_code == 0 and "gold from staff: 2" in listed.output
