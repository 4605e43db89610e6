"""The designer's routes over HTTP: a sample is its uploader's alone, the script's posts need
the session's form token, a hostile upload is one clear refusal, an impossible rule is
refused naming the field and the rule, and what people typed is escaped on the list."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kerani.core.settings import Settings
from kerani.forms.catalogue import template_versions
from kerani.forms.rendering import blank_form
from kerani.forms.templates import load_template
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.storage.stores import Stores
from tests.factories import sign_in_with_code

pytestmark = pytest.mark.slow


def signed_in(settings: Settings, stores: Stores, name: str) -> tuple[TestClient, str]:
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in_with_code(client, add_person(stores.db, name, "agency"))
    page = client.get("/templates/designer")
    assert page.status_code == 200
    csrf = page.text.split('data-csrf="', 1)[1].split('"', 1)[0]
    return client, csrf


def form_png() -> bytes:
    out = io.BytesIO()
    blank_form(load_template("bantuan_form")).save(out, format="PNG")
    return out.getvalue()


def upload(client: TestClient, csrf: str, data: bytes, name: str = "form.png") -> Any:
    return client.post(
        "/templates/samples",
        data={"csrf": csrf},
        files={"file": (name, data, "image/png")},
        headers={"Accept": "application/json"},
    )


def drawn(sample: str, **field: Any) -> dict[str, Any]:
    f = {"name": "full_name", "label": {"en": "Name", "ms": "Nama"}, "type": "text"}
    f.update({"box": [90, 300, 1150, 370], **field})
    return {
        "template": {"name": "drawn", "title": {"en": "D", "ms": "D"}, "fields": [f]},
        "samples": [sample],
    }


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_samples_are_private_and_posts_need_the_form_token(
    settings: Settings, stores: Stores
) -> None:
    ours, csrf = signed_in(settings, stores, "jkm")
    sent = upload(ours, csrf, form_png())
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert (body["width"], body["height"]) == (1240, 1754)
    assert {"full_name", "ic_number", "date_of_birth", "postcode"} <= {
        p["name"] for p in body["proposals"]
    }
    token = body["sample"]
    assert ours.get(f"/templates/samples/{token}").status_code == 200

    theirs, their_csrf = signed_in(settings, stores, "lhdn")
    assert theirs.get(f"/templates/samples/{token}").status_code == 404
    stolen = theirs.post(
        "/templates/trial", json=drawn(token), headers={"X-CSRF-Token": their_csrf}
    )
    assert stolen.status_code == 404
    assert ours.post("/templates", json=drawn(token)).status_code == 403  # no form token
    assert template_versions(stores.db) == []

    saved = ours.post("/templates", json=drawn(token), headers={"X-CSRF-Token": csrf})
    assert saved.status_code == 200 and saved.json()["ref"] == "drawn:1"
    assert saved.json()["anchors"] >= 10  # the blank form's printed words


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_bad_uploads_and_impossible_rules_are_one_clear_refusal(
    settings: Settings, stores: Stores
) -> None:
    client, csrf = signed_in(settings, stores, "<b>jkm</b>")
    text = upload(client, csrf, b"name,ic\nAli,900101-14-5678\n", "list.png")
    assert text.status_code == 400 and "list.png: not an image or a PDF" in text.json()["error"]
    huge = Image.new("L", (20_000, 20_000), 255)
    out = io.BytesIO()
    huge.save(out, format="PNG")
    too_big = upload(client, csrf, out.getvalue(), "huge.png")
    assert too_big.status_code == 400 and "huge.png" in too_big.json()["error"]

    token = upload(client, csrf, form_png()).json()["sample"]
    headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
    impossible = drawn(token, type="number", range={"min": 1, "max": 9}, pattern="[1-9]{3}")
    refused = client.post("/templates", json=impossible, headers=headers)
    assert refused.status_code == 400
    assert refused.json()["error"].startswith("template 'drawn': field 'full_name': rule range")
    outside = client.post("/templates", json=drawn(token, box=[0, 0, 5000, 50]), headers=headers)
    assert outside.status_code == 400 and "lies outside the page" in outside.json()["error"]
    assert template_versions(stores.db) == []

    assert client.post("/templates", json=drawn(token), headers=headers).status_code == 200
    listed = client.get("/templates").text
    assert "designer (&lt;b&gt;jkm&lt;/b&gt;)" in listed and "<b>jkm</b>" not in listed
