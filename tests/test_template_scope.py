"""Templates per agency: an agency sees and uses bundled templates, operators' and its own,
never another agency's (nor how many batches it read with one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kerani.core.errors import TemplateError
from kerani.core.settings import Settings
from kerani.forms.catalogue import add_template, stored_template, template_versions
from kerani.forms.templates import BUNDLED_TEMPLATES
from kerani.people.api_tokens import create_token
from kerani.people.workers import add_person, agency_named
from kerani.review_ui.app import create_app
from kerani.storage.stores import Stores
from tests.factories import sign_in_with_code


def _form(name: str) -> str:
    """The bundled form's YAML under another name."""
    text = (BUNDLED_TEMPLATES / "bantuan_form.yaml").read_text()
    return re.sub(r"^name: .*$", f"name: {name}", text, count=1, flags=re.M)


@pytest.fixture
def agencies(stores: Stores) -> dict[str, str]:
    """Two agencies (with their access codes), each with a template of its own."""
    codes = {name: add_person(stores.db, name, "agency") for name in ("jkm", "lhdn")}
    for name in codes:
        add_template(stores.db, _form(f"{name}_form"), "designer", agency_named(stores.db, name))
    return codes


def test_an_agency_neither_sees_nor_uses_another_agencys_template(
    stores: Stores, settings: Settings, agencies: dict[str, str], tmp_path: Path
) -> None:
    jkm, lhdn = agency_named(stores.db, "jkm"), agency_named(stores.db, "lhdn")
    stored_template(stores.db, "bantuan_form")  # bundled: everyone's
    seen = {v.name for v in template_versions(stores.db, agency_id=lhdn)}
    assert seen == {"bantuan_form", "lhdn_form"}
    assert {v.name for v in template_versions(stores.db)} >= {"jkm_form", "lhdn_form"}
    assert stored_template(stores.db, "lhdn_form", lhdn).name == "lhdn_form"
    # Named by another agency: the very answer a template that does not exist gets.
    with pytest.raises(TemplateError) as theirs:
        stored_template(stores.db, "jkm_form", lhdn)
    with pytest.raises(TemplateError) as nobody:
        stored_template(stores.db, "zzz_form", lhdn)
    assert str(theirs.value).replace("jkm_form", "X") == str(nobody.value).replace("zzz_form", "X")
    assert "jkm_form" not in str(nobody.value)
    with pytest.raises(TemplateError):
        stored_template(stores.db, "jkm_form:1", lhdn)
    assert stored_template(stores.db, "jkm_form", jkm).name == "jkm_form"

    app = create_app(settings, stores)
    # The Templates page and the agency API list alike.
    client = TestClient(app, follow_redirects=False)
    assert sign_in_with_code(client, agencies["lhdn"]).status_code == 303
    page = client.get("/templates").text
    assert "lhdn_form" in page and "jkm_form" not in page
    assert client.get("/templates/designer", params={"start": "jkm_form:1"}).status_code == 404
    token = create_token(stores.db, lhdn, "scripts").token
    api = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    listed = {t["name"] for t in api.get("/api/v1/templates").json()}
    assert listed == {"bantuan_form", "lhdn_form"}
    theirs_made = api.post("/api/v1/batches", json={"name": "n", "template": "jkm_form"})
    nobody_made = api.post("/api/v1/batches", json={"name": "n", "template": "zzz_form"})
    assert theirs_made.status_code == nobody_made.status_code == 400
    assert theirs_made.text.replace("jkm_form", "X") == nobody_made.text.replace("zzz_form", "X")
    assert (
        api.post("/api/v1/batches", json={"name": "n", "template": "lhdn_form"}).status_code == 201
    )
    # Counting only its own batches: jkm's use of the bundled form is not lhdn's business.
    jkm_api = TestClient(
        app, headers={"Authorization": f"Bearer {create_token(stores.db, jkm, 'x').token}"}
    )
    assert (
        jkm_api.post("/api/v1/batches", json={"name": "a", "template": "bantuan_form"}).status_code
        == 201
    )
    (bundled,) = [
        v for v in template_versions(stores.db, agency_id=lhdn) if v.name == "bantuan_form"
    ]
    assert bundled.batches == 0
    (everyone,) = [v for v in template_versions(stores.db) if v.name == "bantuan_form"]
    assert everyone.batches == 1


def test_submitting_for_an_agency_names_only_templates_it_may_use(
    env: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from kerani.cli import app
    from kerani.storage.stores import open_stores

    db = open_stores(Settings.load()).db
    for name in ("jkm", "lhdn"):
        add_person(db, name, "agency")
    add_template(db, _form("jkm_form"), "designer", agency_named(db, "jkm"))
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"not read: the template is refused first")
    runner = CliRunner()
    refused = runner.invoke(
        app, ["submit", str(scan), "--template", "jkm_form", "--agency", "lhdn"]
    )
    assert refused.exit_code != 0
    (line,) = refused.output.strip().splitlines()
    assert line.startswith("error: no template 'jkm_form'") and line.count("jkm_form") == 1
    assert "Traceback" not in refused.output
