"""Every route of the app × every kind of visitor: each route has a rule, and the app keeps it.

The table below is the rule: which identities a route lets through. It is checked against the
app's own route table, so a new route without a rule fails here, and each cell is tried with
real ids (the worker's own leased task, the agency's own batch), so a refusal is the role's
doing and not a bad id's.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import case, func, select, update

from kerani.core.settings import Settings
from kerani.core.vocabulary import Role, Sensitivity
from kerani.forms.catalogue import stored_template
from kerani.ingest.intake import create_open_batch, start_upload
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.gold import next_field_for_keying
from kerani.microtasks.leases import claim_next
from kerani.microtasks.statements import make_payout, week_label, week_start
from kerani.people.api_tokens import create_token
from kerani.people.workers import add_person, hash_pin, person_by_code
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import batch_of, png, seed_page, sign_in_with_code
from tests.test_review_routes import method_paths

# Receipt lines waiting for people: enough for the worker to answer one per route and
# identity without running out.
LINES = [(f"line_{i:03d}", "line", f"TOTAL {i}.00", 40.0) for i in range(60)]
IDENTITIES = ("anonymous", "worker", "paused worker", "agency", "other agency", "operator")
SIGNED_IN = frozenset(IDENTITIES) - {"anonymous"}
WORKER = frozenset({"worker"})
STAFF = frozenset({"operator", "agency", "other agency"})
OPERATOR = frozenset({"operator"})
AGENCY = frozenset({"agency"})
AGENCIES = frozenset({"agency", "other agency"})
# Reached before sign-in by design (each checks its form token; brute force is throttled):
# tried in tests/test_security_signin.py, not here.
PUBLIC = "public"
# Whoever posts it, it only ends the caller's own session (if any): nothing to refuse.
ANYONE = "anyone"

# (method, path) -> who gets through. Every route of the app must be here.
RULES: dict[tuple[str, str], frozenset[str] | str] = {
    ("GET", "/signin"): PUBLIC,
    ("POST", "/signin"): PUBLIC,
    ("POST", "/signin/code"): PUBLIC,
    ("GET", "/join"): PUBLIC,
    ("POST", "/join"): PUBLIC,
    ("POST", "/language"): PUBLIC,
    ("POST", "/signout"): ANYONE,
    # Says only whether each part answers, for a load balancer.
    ("GET", "/health"): PUBLIC,
    ("GET", "/metrics"): OPERATOR,
    ("GET", "/"): SIGNED_IN,
    ("GET", "/me"): WORKER | {"paused worker"},  # a paused worker still sees their pay
    ("GET", "/me/statement/{week}"): WORKER | {"paused worker"},
    # Their own PIN (the current one asked, throttled: tests/test_account_care.py).
    ("GET", "/me/pin"): WORKER | {"paused worker"},
    ("POST", "/me/pin"): WORKER | {"paused worker"},
    # The introduction and the practice round (unpaid, kept apart from real answers).
    ("GET", "/welcome/{step}"): WORKER | {"paused worker"},
    ("GET", "/practice"): WORKER | {"paused worker"},
    ("POST", "/practice"): WORKER | {"paused worker"},
    ("GET", "/practice/feedback"): WORKER | {"paused worker"},
    ("GET", "/review"): WORKER,
    ("POST", "/review/{task_id}"): WORKER,
    # The phone back online renews the leases it kept (a paused worker's: refused).
    ("POST", "/review/renew"): WORKER,
    # The review page's shell for the service worker: no task, snippet or answer in it (a
    # paused worker's script then hears from /review/renew, and the page says why).
    ("GET", "/review/offline"): WORKER | {"paused worker"},
    # The service worker's script: the same file for everyone.
    ("GET", "/sw.js"): PUBLIC,
    ("GET", "/snippets/{task_id}"): WORKER,
    ("GET", "/column"): WORKER,
    ("POST", "/column"): WORKER,
    ("GET", "/status"): STAFF,  # each agency sees its own batches only
    ("GET", "/batches/{batch_id}/report"): frozenset({"operator", "agency"}),
    ("POST", "/batches/{batch_id}/retry"): frozenset({"operator", "agency"}),
    # The template designer: staff; each sees only the samples they uploaded themselves.
    ("GET", "/templates"): STAFF,
    ("GET", "/templates/designer"): STAFF,
    ("POST", "/templates/samples"): STAFF,
    ("GET", "/templates/samples/{token}"): STAFF,
    ("POST", "/templates/trial"): STAFF,
    ("POST", "/templates"): STAFF,
    ("GET", "/operator/gold"): OPERATOR,
    ("POST", "/operator/gold"): OPERATOR,
    ("GET", "/operator/gold/snippets/{field_id}"): OPERATOR,
    ("GET", "/operator/calibration"): OPERATOR,
    ("GET", "/operator/pay"): OPERATOR,
    ("POST", "/operator/pay/rates"): OPERATOR,
    ("POST", "/operator/payouts"): OPERATOR,
    ("GET", "/operator/payouts/{payout_id}.csv"): OPERATOR,
    ("GET", "/operator/workers/{worker_id}/statement/{week}"): OPERATOR,
    ("GET", "/operator/crowd"): OPERATOR,
    ("GET", "/operator/audit"): OPERATOR,
    ("GET", "/operator/workers"): OPERATOR,
    ("POST", "/operator/workers/{worker_id}"): OPERATOR,
    ("POST", "/operator/answers/{answer_id}/reveal"): OPERATOR,
    ("GET", "/api/crowd"): OPERATOR,
    ("GET", "/api/workers"): OPERATOR,
    ("POST", "/api/workers/{worker_id}/{action}"): OPERATOR,
    ("POST", "/api/tasks/claim"): WORKER,
    ("GET", "/api/tasks/{task_id}/snippet"): WORKER,
    ("POST", "/api/tasks/{task_id}/answer"): WORKER,
    ("GET", "/api/batches"): STAFF,
    ("GET", "/api/openapi.json"): STAFF,
    ("GET", "/tokens"): STAFF,
    ("POST", "/tokens"): STAFF,
    ("POST", "/tokens/{token_id}/revoke"): frozenset({"operator", "agency"}),
    ("GET", "/upload"): AGENCIES,
    ("GET", "/batches/{batch_id}/downloads"): frozenset({"operator", "agency"}),
    ("GET", "/batches/{batch_id}/downloads/{name:path}"): frozenset({"operator", "agency"}),
    # The agency API: an agency's own batches only (the upload page's session and CSRF
    # token here; tests/test_agency_api.py calls it with tokens).
    ("GET", "/api/v1/templates"): AGENCIES,
    ("POST", "/api/v1/batches"): AGENCIES,
    ("GET", "/api/v1/batches"): AGENCIES,
    ("GET", "/api/v1/batches/{batch_id}"): AGENCY,
    ("POST", "/api/v1/batches/{batch_id}/s3"): AGENCY,
    ("POST", "/api/v1/batches/{batch_id}/start"): AGENCY,
    ("POST", "/api/v1/batches/{batch_id}/cancel"): AGENCY,
    ("GET", "/api/v1/batches/{batch_id}/records"): AGENCY,
    ("GET", "/api/v1/batches/{batch_id}/exports"): AGENCY,
    ("GET", "/api/v1/batches/{batch_id}/exports/{name:path}"): AGENCY,
    ("POST", "/api/v1/uploads/{batch_id}/files"): AGENCY,
    ("POST", "/api/v1/uploads/{batch_id}/chunked"): AGENCY,
    ("GET", "/api/v1/uploads/chunks/{upload_id}"): AGENCY,
    ("PATCH", "/api/v1/uploads/chunks/{upload_id}"): AGENCY,
}


@dataclass
class Visitor:
    """One identity's client, access code and CSRF token."""

    client: TestClient
    code: str | None
    csrf: str

    def auth(self) -> dict[str, str]:
        """The API's bearer header (none for the anonymous visitor)."""
        return {"Authorization": f"Bearer {self.code}"} if self.code else {}

    def api(self) -> dict[str, str]:
        """What the upload page sends to the agency API: the session's CSRF token."""
        return {"X-CSRF-Token": self.csrf}


@dataclass
class World:
    """The ids a request names: the worker's leased task, the agency's batch, a field."""

    task_id: str
    batch_id: str
    field_id: int
    bystander: int  # a worker whose standing the operator's actions change
    answer_id: int  # the bystander's answer, masked on the status page
    spare_batch: str = ""  # an empty, open batch of the agency (cancelled, filled)
    upload_id: str = ""  # a chunked upload to the spare batch
    token_id: int = 0  # an API token of the agency
    payout_id: int = 0  # a payout made already (the week before this one)
    payout_week: str = ""  # its week, 2026-W48


def visitor(settings: Settings, stores: Stores, code: str | None) -> Visitor:
    """A client signed in with `code` (anonymous when None), with its page's CSRF token."""
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    csrf = ""
    if code is not None:
        assert sign_in_with_code(client, code).status_code == 303
        role = person_by_code(stores.db, code).role
        page = client.get("/me" if role == Role.WORKER else "/status")
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        csrf = found.group(1) if found else ""
    return Visitor(client, code, csrf)


Request = Callable[[Visitor, World], Response]


def key() -> str:
    return secrets.token_urlsafe(12)


# How each guarded route is asked, with a body that would be accepted from its rightful user.
REQUESTS: dict[tuple[str, str], Request] = {
    ("GET", "/"): lambda v, w: v.client.get("/"),
    ("GET", "/me"): lambda v, w: v.client.get("/me"),
    ("GET", "/me/pin"): lambda v, w: v.client.get("/me/pin"),
    # The workers have the PIN "402917" (set in `world`); each posts once.
    ("POST", "/me/pin"): lambda v, w: v.client.post(
        "/me/pin",
        data={"csrf": v.csrf, "current": "402917", "pin": "739164", "pin_again": "739164"},
    ),
    ("GET", "/welcome/{step}"): lambda v, w: v.client.get("/welcome/2"),
    ("GET", "/practice"): lambda v, w: v.client.get("/practice"),
    ("POST", "/practice"): lambda v, w: v.client.post(
        "/practice",
        data={"csrf": v.csrf, "round": "1", "item": "amount-total-020", "value": "54.50"},
    ),
    # Each identity's own answer: the post above made it (a refused one finds none).
    ("GET", "/practice/feedback"): lambda v, w: v.client.get(
        "/practice/feedback?round=1&item=amount-total-020"
    ),
    ("GET", "/review"): lambda v, w: v.client.get("/review"),
    ("POST", "/review/{task_id}"): lambda v, w: v.client.post(
        f"/review/{w.task_id}",
        data={"csrf": v.csrf, "idempotency_key": key(), "action": "skip"},
    ),
    ("POST", "/review/renew"): lambda v, w: v.client.post(
        "/review/renew", data={"csrf": v.csrf, "held": w.task_id}
    ),
    ("GET", "/review/offline"): lambda v, w: v.client.get("/review/offline"),
    ("GET", "/snippets/{task_id}"): lambda v, w: v.client.get(f"/snippets/{w.task_id}"),
    ("GET", "/column"): lambda v, w: v.client.get("/column"),
    ("POST", "/column"): lambda v, w: v.client.post(
        "/column",
        data={"csrf": v.csrf, "column_key": key(), "task_id": [w.task_id], "value": ["TOTAL 1.00"]},
    ),
    ("GET", "/status"): lambda v, w: v.client.get("/status"),
    ("GET", "/batches/{batch_id}/report"): lambda v, w: v.client.get(
        f"/batches/{w.batch_id}/report"
    ),
    ("POST", "/batches/{batch_id}/retry"): lambda v, w: v.client.post(
        f"/batches/{w.batch_id}/retry", data={"csrf": v.csrf}
    ),
    ("GET", "/templates"): lambda v, w: v.client.get("/templates"),
    ("GET", "/templates/designer"): lambda v, w: v.client.get("/templates/designer"),
    ("POST", "/templates/samples"): lambda v, w: v.client.post(
        "/templates/samples",
        data={"csrf": v.csrf},
        files={"file": ("form.png", png(200, 120), "image/png")},
    ),
    ("GET", "/templates/samples/{token}"): lambda v, w: v.client.get(
        f"/templates/samples/{own_sample(v)}"
    ),
    ("POST", "/templates/trial"): lambda v, w: v.client.post(
        "/templates/trial", json=designed(v), headers={"X-CSRF-Token": v.csrf}
    ),
    ("POST", "/templates"): lambda v, w: v.client.post(
        "/templates", json=designed(v), headers={"X-CSRF-Token": v.csrf}
    ),
    ("GET", "/operator/gold"): lambda v, w: v.client.get("/operator/gold"),
    ("POST", "/operator/gold"): lambda v, w: v.client.post(
        "/operator/gold", data={"csrf": v.csrf, "field_id": str(w.field_id), "value": "TOTAL 1.00"}
    ),
    ("GET", "/operator/gold/snippets/{field_id}"): lambda v, w: v.client.get(
        f"/operator/gold/snippets/{w.field_id}"
    ),
    ("GET", "/operator/calibration"): lambda v, w: v.client.get("/operator/calibration"),
    ("GET", "/operator/pay"): lambda v, w: v.client.get("/operator/pay"),
    ("POST", "/operator/pay/rates"): lambda v, w: v.client.post(
        "/operator/pay/rates", data={"csrf": v.csrf}
    ),
    ("POST", "/operator/payouts"): lambda v, w: v.client.post(
        "/operator/payouts", data={"csrf": v.csrf, "week": w.payout_week}
    ),
    ("GET", "/operator/payouts/{payout_id}.csv"): lambda v, w: v.client.get(
        f"/operator/payouts/{w.payout_id}.csv"
    ),
    ("GET", "/operator/workers/{worker_id}/statement/{week}"): lambda v, w: v.client.get(
        f"/operator/workers/{w.bystander}/statement/{w.payout_week}"
    ),
    ("GET", "/me/statement/{week}"): lambda v, w: v.client.get(f"/me/statement/{w.payout_week}"),
    ("GET", "/operator/crowd"): lambda v, w: v.client.get("/operator/crowd"),
    ("GET", "/operator/audit"): lambda v, w: v.client.get("/operator/audit?action=claim"),
    ("GET", "/operator/workers"): lambda v, w: v.client.get("/operator/workers"),
    ("POST", "/operator/workers/{worker_id}"): lambda v, w: v.client.post(
        f"/operator/workers/{w.bystander}", data={"csrf": v.csrf, "action": "trust"}
    ),
    ("POST", "/operator/answers/{answer_id}/reveal"): lambda v, w: v.client.post(
        f"/operator/answers/{w.answer_id}/reveal", data={"csrf": v.csrf}
    ),
    ("GET", "/api/crowd"): lambda v, w: v.client.get("/api/crowd", headers=v.auth()),
    ("GET", "/metrics"): lambda v, w: v.client.get("/metrics", headers=v.auth()),
    ("GET", "/api/workers"): lambda v, w: v.client.get("/api/workers", headers=v.auth()),
    ("POST", "/api/workers/{worker_id}/{action}"): lambda v, w: v.client.post(
        f"/api/workers/{w.bystander}/clear", headers=v.auth()
    ),
    ("POST", "/api/tasks/claim"): lambda v, w: v.client.post("/api/tasks/claim", headers=v.auth()),
    ("GET", "/api/tasks/{task_id}/snippet"): lambda v, w: v.client.get(
        f"/api/tasks/{w.task_id}/snippet", headers=v.auth()
    ),
    ("POST", "/api/tasks/{task_id}/answer"): lambda v, w: v.client.post(
        f"/api/tasks/{w.task_id}/answer",
        headers=v.auth(),
        json={"kind": "skip", "value": "", "idempotency_key": key()},
    ),
    ("GET", "/api/batches"): lambda v, w: v.client.get("/api/batches", headers=v.auth()),
    ("GET", "/api/openapi.json"): lambda v, w: v.client.get("/api/openapi.json", headers=v.auth()),
    ("GET", "/tokens"): lambda v, w: v.client.get("/tokens"),
    ("POST", "/tokens"): lambda v, w: v.client.post(
        "/tokens", data={"csrf": v.csrf, "label": "ci", "agency": "agency"}
    ),
    ("POST", "/tokens/{token_id}/revoke"): lambda v, w: v.client.post(
        f"/tokens/{w.token_id}/revoke", data={"csrf": v.csrf}
    ),
    ("GET", "/upload"): lambda v, w: v.client.get("/upload"),
    ("GET", "/batches/{batch_id}/downloads"): lambda v, w: v.client.get(
        f"/batches/{w.batch_id}/downloads"
    ),
    ("GET", "/batches/{batch_id}/downloads/{name:path}"): lambda v, w: v.client.get(
        f"/batches/{w.batch_id}/downloads/records.csv"
    ),
    ("GET", "/api/v1/templates"): lambda v, w: v.client.get("/api/v1/templates"),
    ("POST", "/api/v1/batches"): lambda v, w: v.client.post(
        "/api/v1/batches", json={"name": "n", "template": "receipt"}, headers=v.api()
    ),
    ("GET", "/api/v1/batches"): lambda v, w: v.client.get("/api/v1/batches"),
    ("GET", "/api/v1/batches/{batch_id}"): lambda v, w: v.client.get(
        f"/api/v1/batches/{w.batch_id}"
    ),
    ("POST", "/api/v1/batches/{batch_id}/s3"): lambda v, w: v.client.post(
        f"/api/v1/batches/{w.batch_id}/s3", json={"s3_url": "s3://b/agency/"}, headers=v.api()
    ),
    ("POST", "/api/v1/batches/{batch_id}/start"): lambda v, w: v.client.post(
        f"/api/v1/batches/{w.batch_id}/start", headers=v.api()
    ),
    # An empty batch of the agency's of its own: cancelling the world's would take the
    # worker's tasks away.
    ("POST", "/api/v1/batches/{batch_id}/cancel"): lambda v, w: v.client.post(
        f"/api/v1/batches/{w.spare_batch}/cancel", headers=v.api()
    ),
    ("GET", "/api/v1/batches/{batch_id}/records"): lambda v, w: v.client.get(
        f"/api/v1/batches/{w.batch_id}/records"
    ),
    ("GET", "/api/v1/batches/{batch_id}/exports"): lambda v, w: v.client.get(
        f"/api/v1/batches/{w.batch_id}/exports"
    ),
    ("GET", "/api/v1/batches/{batch_id}/exports/{name:path}"): lambda v, w: v.client.get(
        f"/api/v1/batches/{w.batch_id}/exports/records.csv"
    ),
    ("POST", "/api/v1/uploads/{batch_id}/files"): lambda v, w: v.client.post(
        f"/api/v1/uploads/{w.spare_batch}/files",
        files={"files": ("a.png", png(), "image/png")},
        headers=v.api(),
    ),
    ("POST", "/api/v1/uploads/{batch_id}/chunked"): lambda v, w: v.client.post(
        f"/api/v1/uploads/{w.batch_id}/chunked",
        json={"filename": "a.png", "size": 10},
        headers=v.api(),
    ),
    ("GET", "/api/v1/uploads/chunks/{upload_id}"): lambda v, w: v.client.get(
        f"/api/v1/uploads/chunks/{w.upload_id}"
    ),
    ("PATCH", "/api/v1/uploads/chunks/{upload_id}"): lambda v, w: v.client.patch(
        f"/api/v1/uploads/chunks/{w.upload_id}",
        content=b"0123456789",
        headers=v.api() | {"Upload-Offset": "0"},
    ),
}


def own_sample(v: Visitor) -> str:
    """A sample this visitor uploads to the designer ('' when they may not)."""
    sent = v.client.post(
        "/templates/samples",
        data={"csrf": v.csrf},
        files={"file": ("form.png", png(200, 120), "image/png")},
        headers={"Accept": "application/json"},
    )
    return str(sent.json()["sample"]) if sent.status_code == 200 else "0" * 32


def designed(v: Visitor) -> dict[str, Any]:
    """What the designer's script sends: a one-field form on the visitor's own sample."""
    field = {
        "name": "total",
        "label": {"en": "Total", "ms": "Jumlah"},
        "type": "amount",
        "box": [10, 10, 150, 60],
    }
    template = {"name": "drawn", "title": {"en": "Drawn", "ms": "Dilukis"}, "fields": [field]}
    return {"template": template, "samples": [own_sample(v)]}


def refused(response: Response) -> bool:
    """Turned away: not signed in, not allowed, or (for ids not theirs) as if nothing there."""
    if response.status_code == 303:
        return response.headers["location"] == "/signin"
    return response.status_code in (401, 403, 404)


def written(stores: Stores) -> tuple[int, ...]:
    """How many answers, payments, staff keyings and audit rows there are, and how many
    workers are arbiters, cleared or paused."""
    w = schema.workers
    with stores.db.connect() as conn:
        rows = tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (
                schema.answers,
                schema.ledger,
                schema.gold_keyings,
                schema.audit_log,
                schema.practice_answers,
            )
        )
        flags = conn.execute(
            select(
                func.sum(case((w.c.trusted, 1), else_=0)),
                func.sum(case((w.c.cleared, 1), else_=0)),
                func.sum(case((w.c.quarantined, 1), else_=0)),
            )
        ).one()
    return (*rows, *flags)


@pytest.fixture
def world(settings: Settings, stores: Stores) -> Iterator[tuple[World, dict[str, str | None]]]:
    """A routed page in the agency's batch, a worker holding one of its tasks, and codes."""
    page_id = seed_page(stores, LINES, template="receipt")
    codes: dict[str, str | None] = {"anonymous": None}
    for identity, role in (
        ("worker", "worker"),
        ("paused worker", "worker"),
        ("agency", "agency"),
        ("other agency", "agency"),
        ("operator", "operator"),
        ("bystander", "worker"),
    ):
        codes[identity] = add_person(
            stores.db,
            identity.replace(" ", "_"),
            role,
            proven=role == "worker",
            practised=role == "worker",
        )
    ids = {name: person_by_code(stores.db, c).id for name, c in codes.items() if c}
    batch_id = batch_of(stores, page_id)
    with stores.db.begin() as conn:
        conn.execute(
            update(schema.batches)
            .where(schema.batches.c.id == batch_id)
            .values(agency_id=ids["agency"])
        )
        conn.execute(
            update(schema.workers)
            .where(schema.workers.c.id == ids["paused worker"])
            .values(quarantined=True)
        )
        # A PIN too, as workers who joined by invite have: /me/pin asks for it.
        conn.execute(
            update(schema.workers)
            .where(schema.workers.c.id.in_([ids["worker"], ids["paused worker"]]))
            .values(pin_hash=hash_pin("402917"))
        )
        # A field staff may key for gold (public: the template lets it be gold).
        conn.execute(update(schema.fields).values(sensitivity=Sensitivity.PUBLIC))
    field_id = next_field_for_keying(stores.db, ids["operator"])
    assert field_id is not None
    bystander = ids.pop("bystander")
    task = claim_next(stores.db, bystander, settings.crowd)
    assert task is not None
    submit_answer(stores.db, task.task_id, bystander, "value", "X", "by-1", settings.crowd)
    with stores.db.connect() as conn:
        answer_id = conn.execute(select(func.max(schema.answers.c.id))).scalar_one()
    receipt = stored_template(stores.db, "receipt")
    spare = create_open_batch(stores.db, receipt, ids["agency"], "spare")
    upload = start_upload(stores.db, spare, ids["agency"], "big.png", 10, settings.ingest)
    token = create_token(stores.db, ids["agency"], "ci").id
    this_week = week_start(utcnow())
    made = make_payout(stores.db, None, this_week, settings.crowd)
    last_week = week_label(this_week - timedelta(days=7))
    world = World(
        "",
        batch_id,
        field_id,
        bystander,
        int(answer_id),
        spare,
        upload.id,
        token,
        made.id,
        last_week,
    )
    yield world, codes


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_every_route_has_a_rule_and_every_identity_gets_what_the_rule_says(
    settings: Settings, stores: Stores, world: tuple[World, dict[str, str | None]]
) -> None:
    ids, codes = world
    app_routes = method_paths(TestClient(create_app(settings, stores)))
    assert app_routes - set(RULES) == set(), "a route without a rule: add it to RULES"
    assert set(RULES) - app_routes == set(), "a rule for a route that is gone"
    guarded = [r for r, rule in RULES.items() if not isinstance(rule, str)]
    assert set(guarded) <= set(REQUESTS)
    wrong: list[str] = []
    cells = 0
    visitors = {identity: visitor(settings, stores, codes[identity]) for identity in IDENTITIES}
    holder = visitors["worker"]
    for identity, v in visitors.items():
        for route in guarded:
            # The worker asks with a task they hold (a skip gives one back); everyone else
            # names that same task.
            ids.task_id = holder.client.post("/api/tasks/claim", headers=holder.auth()).json()[
                "task_id"
            ]
            rule = RULES[route]
            assert not isinstance(rule, str)
            before = written(stores)
            response = REQUESTS[route](v, ids)
            cells += 1
            assert response.status_code < 500, f"{identity} {route}: {response.status_code}"
            let_in = identity in rule
            # A refusal that answers 2xx/3xx would still be a refusal if it wrote nothing;
            # the table wants it said plainly, except where a post writes nothing by design.
            if let_in == refused(response):
                wrong.append(f"{identity} {route[0]} {route[1]}: {response.status_code}")
            if not let_in:
                assert written(stores) == before, f"{identity} {route} wrote something"
    assert wrong == [], "\n".join(wrong)
    assert cells == len(guarded) * len(IDENTITIES)


def test_an_anonymous_post_to_every_public_route_is_refused_without_its_form_token(
    settings: Settings, stores: Stores
) -> None:
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    forms: dict[str, dict[str, Any]] = {
        "/signin": {"number": "1", "pin": "123456"},
        "/signin/code": {"code": "x"},
        "/join": {"invite": "x", "pin": "123456", "pin_again": "123456"},
        "/language": {"lang": "ms"},
    }
    assert {("POST", p) for p in forms} == {
        r for r, rule in RULES.items() if rule == PUBLIC and r[0] == "POST"
    }
    for path, form in forms.items():
        assert client.post(path, data=form).status_code == 403, path
