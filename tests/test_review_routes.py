"""Every route of the review app refuses a visitor who is not signed in, whichever router it
lives in; and answers keep what the page pre-filled and how long the worker took."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.routing import BaseRoute

from kerani.core.settings import Settings
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import seed_page, sign_in_with_code

GUESSES = [("postcode", "postcode", "4O100", 99.0), ("city", "text", "SHAH ALAM", 40.0)]
# The only routes a visitor may use before signing in: the sign-in and join forms and the
# language switch (each checks its form token). The API's description is for staff only.
PUBLIC = {
    ("GET", "/signin"),
    ("POST", "/signin"),
    ("POST", "/signin/code"),
    ("GET", "/join"),
    ("POST", "/join"),
    ("POST", "/language"),
    ("GET", "/health"),
    # The service worker's script: the same file for everyone, nothing of anyone's in it.
    ("GET", "/sw.js"),
}


@pytest.fixture
def client(settings: Settings, stores: Stores) -> TestClient:
    return TestClient(create_app(settings, stores), follow_redirects=False)


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute | BaseRoute]:
    """The app's routes, those of included routers among them (the static mount left out)."""
    for route in routes:
        # FastAPI keeps an included router whole (not copied route by route) in app.routes.
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)
        elif getattr(route, "methods", None):
            yield route


def method_paths(client: TestClient) -> set[tuple[str, str]]:
    """(method, path) of every GET, POST and PATCH route of the app."""
    found = set()
    for route in api_routes(client.app.routes):  # type: ignore[attr-defined]
        for method in getattr(route, "methods", set()) & {"GET", "POST", "PATCH"}:
            found.add((method, str(getattr(route, "path", ""))))
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_route_but_sign_in_refuses_an_anonymous_visitor(
    client: TestClient, stores: Stores
) -> None:
    seed_page(stores, GUESSES)
    routes = method_paths(client)
    assert routes >= PUBLIC, "a public route has moved or gone: update PUBLIC"
    guarded = sorted(routes - PUBLIC)
    # The walk reached into every router, not only the app's own routes.
    one_of_each = {("GET", "/"), ("POST", "/review/{task_id}"), ("GET", "/status")}
    assert one_of_each | {("POST", "/api/tasks/{task_id}/answer")} <= set(guarded)
    let_through = []
    for method, path in guarded:
        url = re.sub(r"\{[^}]+\}", "0123456789abcdef", path)
        response = client.request(method, url)
        if response.status_code == 303:
            refused = response.headers["location"] == "/signin"
        else:
            refused = response.status_code in (401, 403)
        if not refused:
            let_through.append(f"{method} {path}: {response.status_code}")
    assert let_through == []


def signed_in_worker(client: TestClient, stores: Stores, name: str = "ana") -> str:
    """Sign a new worker in on `client`; their access code."""
    code = add_person(stores.db, name, "worker", proven=True, practised=True)
    assert sign_in_with_code(client, code).status_code == 303
    return code


def recorded_answers(stores: Stores) -> dict[str, tuple[str | None, int | None]]:
    """task id -> (prefilled, duration_ms) of every answer."""
    a = schema.answers
    with stores.db.connect() as conn:
        rows = conn.execute(select(a.c.task_id, a.c.prefilled, a.c.duration_ms)).all()
    return {r.task_id: (r.prefilled, r.duration_ms) for r in rows}


def review_form(client: TestClient) -> dict[str, str]:
    """The one-by-one page's form: its action's task id and its hidden fields."""
    page = client.get("/review").text
    fields = dict(re.findall(r'name="(csrf|idempotency_key|prefilled)" value="([^"]*)"', page))
    fields["task_id"] = re.search(r'action="/review/([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return fields


def test_an_api_answer_keeps_what_was_prefilled_and_the_time_taken(
    client: TestClient, stores: Stores
) -> None:
    seed_page(stores, GUESSES)
    auth = {"Authorization": f"Bearer {add_person(stores.db, 'ana', 'worker', practised=True)}"}
    task = client.post("/api/tasks/claim", headers=auth).json()
    answer: dict[str, Any] = {"value": "40100", "idempotency_key": "a1"}
    for duration in (-1, 86_400_001):  # untrusted: out of range is refused, nothing kept
        bad = answer | {"prefilled": task["ocr_guess"], "duration_ms": duration}
        refused = client.post(f"/api/tasks/{task['task_id']}/answer", headers=auth, json=bad)
        assert refused.status_code == 400
    assert recorded_answers(stores) == {}
    good = answer | {"prefilled": task["ocr_guess"], "duration_ms": 2345}
    response = client.post(f"/api/tasks/{task['task_id']}/answer", headers=auth, json=good)
    assert response.status_code == 200
    assert recorded_answers(stores) == {task["task_id"]: (task["ocr_guess"], 2345)}


def test_the_page_form_sends_its_prefilled_guess_and_the_script_its_time(
    client: TestClient, stores: Stores
) -> None:
    seed_page(stores, GUESSES)
    signed_in_worker(client, stores)
    first = review_form(client)
    assert first["prefilled"] in {"4O100", "SHAH ALAM"}  # the guess the box shows
    form = {k: first[k] for k in ("csrf", "idempotency_key", "prefilled")} | {"value": "x"}
    # The form as posted without the script: the guess, no time.
    assert client.post(f"/review/{first['task_id']}", data=form).status_code == 303
    second = review_form(client)
    form = {k: second[k] for k in ("csrf", "idempotency_key", "prefilled")} | {"value": "y"}
    # The script's background post adds the time from showing the task to the submit.
    for bad in ("soon", "-5", "86400001"):
        refused = client.post(f"/review/{second['task_id']}", data=form | {"duration_ms": bad})
        assert refused.status_code == 400
    answered = client.post(
        f"/review/{second['task_id']}",
        data=form | {"duration_ms": "1875"},
        headers={"Accept": "application/json"},
    )
    assert answered.status_code == 200
    assert recorded_answers(stores) == {
        first["task_id"]: (first["prefilled"], None),
        second["task_id"]: (second["prefilled"], 1875),
    }


def test_a_column_sends_the_guess_of_each_row_but_no_time(
    client: TestClient, stores: Stores
) -> None:
    lines = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 50.0) for i in range(4)]
    seed_page(stores, lines, template="receipt")
    signed_in_worker(client, stores)
    page = client.get("/column").text
    task_ids = re.findall(r'name="task_id" value="([^"]+)"', page)
    guesses = re.findall(r'name="prefilled" value="([^"]*)"', page)
    assert len(guesses) == len(task_ids) == 4
    form = {
        "csrf": re.search(r'name="csrf" value="([^"]+)"', page).group(1),  # type: ignore[union-attr]
        "column_key": re.search(r'name="column_key" value="([^"]+)"', page).group(1),  # type: ignore[union-attr]
        "task_id": task_ids,
        "value": ["TOTAL 9.99", *guesses[1:]],
        "prefilled": guesses,
    }
    short = form | {"prefilled": guesses[:2]}  # not one guess per row: refused
    assert client.post("/column", data=short).status_code == 400
    assert client.post("/column", data=form).status_code == 303
    assert recorded_answers(stores) == {
        task: (guess, None) for task, guess in zip(task_ids, guesses, strict=True)
    }
