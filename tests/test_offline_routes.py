"""The routes behind offline work (both databases): the service worker's script, the review
page's shell, the renewal of the leases a phone kept, the answer reply's bigger reserve and
sign-out making the browser forget what the pages kept."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from kerani.core.settings import Settings
from kerani.people.workers import add_person, person_by_code
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import seed_page
from tests.test_review_routes import client, review_form, signed_in_worker

__all__ = ["client"]

LINES = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 40.0) for i in range(16)]


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def test_the_service_worker_is_served_for_the_whole_site_and_never_stale(
    client: TestClient,
) -> None:
    sw = client.get("/sw.js")
    assert sw.status_code == 200
    assert sw.headers["content-type"].startswith("text/javascript")
    assert sw.headers["service-worker-allowed"] == "/"
    assert sw.headers["cache-control"] == "no-cache"
    assert "default-src 'self'" in sw.headers["content-security-policy"]
    assert "/review/offline" in sw.text


def test_the_shell_leases_nothing_and_holds_no_task(
    client: TestClient, stores: Stores, settings: Settings
) -> None:
    seed_page(stores, LINES, template="receipt")
    settings.crowd.max_fields_per_document = 100
    signed_in_worker(client, stores)
    shell = client.get("/review/offline")
    assert shell.status_code == 200
    assert "data-shell" in shell.text and 'action="/review/"' in shell.text
    assert "data:image" not in shell.text  # no snippet
    t = schema.tasks
    with stores.db.connect() as conn:
        leased = conn.execute(
            select(func.count()).select_from(t).where(t.c.lease_worker_id.is_not(None))
        ).scalar_one()
    assert leased == 0


def test_a_renewal_keeps_what_is_still_the_workers_names_the_rest_and_tops_up(
    client: TestClient, stores: Stores, settings: Settings
) -> None:
    seed_page(stores, LINES, template="receipt")
    settings.crowd.max_fields_per_document = 100
    settings.crowd.offline_reserve = 4
    signed_in_worker(client, stores)
    form = review_form(client)  # the page: three tasks leased
    csrf = form["csrf"]
    t = schema.tasks
    with stores.db.connect() as conn:
        held = list(
            conn.execute(
                select(t.c.id)
                .where(t.c.lease_worker_id.is_not(None))
                .order_by(t.c.lease_expires_at)
            ).scalars()
        )
    assert len(held) == 3 and held[0] == form["task_id"]
    ben = person_by_code(stores.db, add_person(stores.db, "ben", "worker")).id
    with stores.db.begin() as conn:  # the second was taken by someone else meanwhile
        conn.execute(update(t).where(t.c.id == held[1]).values(lease_worker_id=ben))
    refused = client.post("/review/renew", data={"csrf": "wrong", "held": ",".join(held)})
    assert refused.status_code == 403
    sent = {"csrf": csrf, "waiting": held[2], "held": f"{held[0]},{held[1]}"}
    reply = client.post("/review/renew", data=sent, headers={"Accept": "application/json"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["gone"] == [held[1]]
    listed = [u["task_id"] for u in body["upcoming"]]
    # The task whose answer waits first, then the one shown, then new ones: one shown, four
    # in reserve and one more for the answer on its way. Only new ones carry a snippet.
    assert listed[:2] == [held[2], held[0]] and len(listed) == 6
    assert [("snippet_src" in u) for u in body["upcoming"]] == [False, False] + [True] * 4
    assert body["progress"].startswith("Today: 0 done")
    too_many = ",".join(f"id{i}" for i in range(201))
    assert client.post("/review/renew", data={"csrf": csrf, "held": too_many}).status_code == 400


def test_an_answer_reply_tops_the_reserve_up_to_the_setting(
    client: TestClient, stores: Stores, settings: Settings
) -> None:
    seed_page(stores, LINES, template="receipt")
    settings.crowd.max_fields_per_document = 100
    settings.crowd.offline_reserve = 5
    signed_in_worker(client, stores)
    form = review_form(client)
    data = {k: form[k] for k in ("csrf", "idempotency_key", "prefilled")} | {"value": "x"}
    reply = client.post(
        f"/review/{form['task_id']}", data=data, headers={"Accept": "application/json"}
    )
    assert reply.status_code == 200 and len(reply.json()["upcoming"]) == 6


def test_sign_out_makes_the_browser_forget_what_the_pages_kept(
    client: TestClient, stores: Stores
) -> None:
    signed_in_worker(client, stores)
    with stores.db.begin() as conn:
        conn.execute(update(schema.workers).values(practice_passed_at=utcnow()))
    csrf = _csrf(client.get("/me").text)
    out = client.post("/signout", data={"csrf": csrf})
    assert out.status_code == 303
    assert out.headers["clear-site-data"] == '"cache", "storage"'
