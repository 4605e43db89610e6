"""The review app through an in-process HTTP client: sign-in, CSRF, roles, leases, escaping."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kerani.core.settings import Settings
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import seed_page, sign_in_with_code

GUESSES = [("postcode", "postcode", "4O100", 99.0), ("city", "text", "SHAH ALAM", 40.0)]


@pytest.fixture
def client(settings: Settings, stores: Stores) -> TestClient:
    return TestClient(create_app(settings, stores), follow_redirects=False)


def sign_in(client: TestClient, code: str) -> None:
    response = sign_in_with_code(client, code)
    assert response.status_code == 303, response.text


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'name="(csrf|idempotency_key|value)" value="([^"]*)"', html))


def test_worker_corrects_a_snippet_through_the_page(client: TestClient, stores: Stores) -> None:
    seed_page(stores, GUESSES)
    sign_in(client, add_person(stores.db, "ana", "worker", practised=True))
    page = client.get("/review")
    assert page.status_code == 200
    assert 'value="4O100"' in page.text and "Postcode" in page.text  # guess pre-filled, label
    task_id = re.search(r'action="/review/([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    snippet = client.get(f"/snippets/{task_id}")
    assert snippet.status_code == 200 and snippet.content.startswith(b"\x89PNG")
    assert snippet.headers["cache-control"] == "private, no-store"
    fields = form_fields(page.text)
    answer = {
        "csrf": fields["csrf"],
        "idempotency_key": fields["idempotency_key"],
        "value": "40100",
        "action": "value",
    }
    assert client.post(f"/review/{task_id}", data=answer).status_code == 303
    # A retried submit (double tap, flaky network) records nothing new.
    assert client.post(f"/review/{task_id}", data=answer).status_code == 303
    with stores.db.connect() as conn:
        rows = conn.execute(select(schema.answers.c.value, schema.answers.c.kind)).all()
        actions = conn.execute(select(schema.audit_log.c.action)).scalars().all()
    assert [tuple(r) for r in rows] == [("40100", "value")]
    assert {"claim", "view", "answer"} <= set(actions)
    # The next page offers the next task, not the one just answered.
    assert task_id not in client.get("/review").text


def test_forms_without_the_csrf_token_are_refused(client: TestClient, stores: Stores) -> None:
    seed_page(stores, GUESSES)
    sign_in(client, add_person(stores.db, "ana", "worker", practised=True))
    page = client.get("/review")
    task_id = re.search(r'action="/review/([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    response = client.post(
        f"/review/{task_id}",
        data={"csrf": "forged", "idempotency_key": "k1", "value": "x", "action": "value"},
    )
    assert response.status_code == 403
    with stores.db.connect() as conn:
        assert conn.execute(select(schema.answers)).first() is None


def test_a_worker_cannot_reach_another_workers_task(settings: Settings, stores: Stores) -> None:
    seed_page(stores, GUESSES)
    ana = TestClient(create_app(settings, stores), follow_redirects=False)
    eve = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in(ana, add_person(stores.db, "ana", "worker", practised=True))
    sign_in(eve, add_person(stores.db, "eve", "worker", practised=True))
    page = ana.get("/review")
    task_id = re.search(r'action="/review/([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert eve.get(f"/snippets/{task_id}").status_code == 403
    eve_page = eve.get("/review")
    csrf = form_fields(eve_page.text)["csrf"]
    refused = eve.post(
        f"/review/{task_id}",
        data={"csrf": csrf, "idempotency_key": "eve", "value": "x", "action": "value"},
    )
    assert refused.status_code == 403


def test_roles_are_enforced_on_every_route(client: TestClient, stores: Stores) -> None:
    seed_page(stores, GUESSES)
    assert client.get("/review").headers["location"] == "/signin"
    assert client.get("/status").headers["location"] == "/signin"
    assert client.post("/api/tasks/claim").status_code == 403
    agency = add_person(stores.db, "agency-1", "agency")
    worker = add_person(stores.db, "ana", "worker", practised=True)
    assert (
        client.post("/api/tasks/claim", headers={"Authorization": f"Bearer {agency}"}).status_code
        == 403
    )
    assert (
        client.get("/api/batches", headers={"Authorization": f"Bearer {worker}"}).status_code == 403
    )
    assert (
        client.get("/api/batches", headers={"Authorization": f"Bearer {agency}"}).status_code == 200
    )
    sign_in(client, worker)
    assert client.get("/status").status_code == 403


def test_what_a_worker_types_is_escaped_on_the_operator_page(
    settings: Settings, stores: Stores
) -> None:
    seed_page(stores, GUESSES)
    # Public fields: the status page shows their answers (personal ones come masked).
    with stores.db.begin() as conn:
        conn.execute(schema.fields.update().values(sensitivity="public"))
    code = add_person(stores.db, "mallory", "worker", practised=True)
    api = TestClient(create_app(settings, stores))
    auth = {"Authorization": f"Bearer {code}"}
    task = api.post("/api/tasks/claim", headers=auth).json()
    script = "<script>alert('x')</script>"
    assert (
        api.post(
            f"/api/tasks/{task['task_id']}/answer",
            headers=auth,
            json={"value": script, "idempotency_key": "m1"},
        ).status_code
        == 200
    )
    operator = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in(operator, add_person(stores.db, "olive", "operator"))
    page = operator.get("/status")
    assert page.status_code == 200
    assert script not in page.text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_wrong_access_code_is_refused(client: TestClient) -> None:
    response = sign_in_with_code(client, "guess")
    assert response.status_code == 403 and "not right" in response.text
    assert "kerani_session" not in response.cookies
