"""`/health` for load balancers and `/metrics` for Prometheus.

/health says only whether each part answers (nothing about the work or the people), so it is
open to a load balancer without a session; it answers 503 when the database or the blob
store does not. /metrics is the crowd's figures in Prometheus' text format, for operators
(a scraper sends an operator's access code as its bearer token).
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from kerani.core.vocabulary import Role
from kerani.microtasks.crowd import CrowdHealth, crowd_health, workers_by_status
from kerani.review_ui.web import ApiPerson, db_of, need_role, settings_of, stores_of

router = APIRouter()
PREFECT_TIMEOUT = 2.0


def _database_ok(request: Request) -> str:
    try:
        with db_of(request).connect() as conn:
            conn.execute(text("select 1"))
    except Exception:  # any failure is "down": the reason belongs in the server's log
        return "down"
    return "ok"


def _blobs_ok(request: Request) -> str:
    try:
        # A key nobody wrote: the store is asked, and answers "no" when it is up.
        stores_of(request).blobs.exists(f"health/{secrets.token_hex(8)}")
    except Exception:
        return "down"
    return "ok"


def _prefect_ok() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return "not used"  # embedded: documents are reassembled in the review app
    try:
        up = httpx.get(f"{url.rstrip('/')}/health", timeout=PREFECT_TIMEOUT).status_code == 200
    except httpx.HTTPError:
        up = False
    return "ok" if up else "unreachable"


@router.get("/health")
def health(request: Request) -> Response:
    """Whether the database, the blob store and Prefect answer (503: one Kerani needs is down)."""
    parts = {
        "database": _database_ok(request),
        "blobs": _blobs_ok(request),
        # Not needed to take answers: settle events wait for the reconcile flow.
        "prefect": _prefect_ok(),
    }
    up = parts["database"] == "ok" and parts["blobs"] == "ok"
    return JSONResponse({"status": "ok" if up else "down", **parts}, status_code=200 if up else 503)


class CrowdCollector(Collector):
    """The crowd's figures of one moment as Prometheus gauges."""

    def __init__(self, crowd: CrowdHealth, statuses: dict[str, int]) -> None:
        self.crowd, self.statuses = crowd, statuses

    def collect(self) -> Any:
        """Yield each gauge."""
        c = self.crowd
        open_tasks = GaugeMetricFamily(
            "kerani_open_tasks", "Open work tasks by field type", labels=["field_type"]
        )
        oldest = GaugeMetricFamily(
            "kerani_oldest_open_task_hours",
            "Hours the oldest open task of a field type has waited",
            labels=["field_type"],
        )
        for o in c.open_tasks:
            open_tasks.add_metric([o.field_type], o.total)
            oldest.add_metric([o.field_type], o.oldest_hours)
        yield open_tasks
        yield oldest
        for name, doc, value in (
            ("kerani_leases_held", "Tasks held by a worker now", c.leases_held),
            ("kerani_leases_expired", "Leases that ran out, task free again", c.leases_expired),
            (
                "kerani_active_workers",
                "Workers who answered in the last 15 minutes",
                c.active_workers,
            ),
            ("kerani_answers_last_hour", "Answers in the last hour", c.answers_last_hour),
            (
                "kerani_fields_settled_last_hour",
                "Fields settled in the last hour",
                c.fields_settled_last_hour,
            ),
            ("kerani_fields_waiting", "Disputes and fields at the answer limit", len(c.waiting)),
        ):
            yield GaugeMetricFamily(name, doc, value=value)
        workers = GaugeMetricFamily("kerani_workers", "Workers by standing", labels=["status"])
        for status, n in sorted(self.statuses.items()):
            workers.add_metric([status], n)
        yield workers


@router.get("/metrics")
def metrics(request: Request, person: ApiPerson) -> Response:
    """The crowd's figures in Prometheus' text format (operators only)."""
    need_role(person, Role.OPERATOR)
    db = db_of(request)
    statuses = workers_by_status(db)
    # A registry per scrape: nothing global, and the figures are read once, now.
    registry = CollectorRegistry()
    registry.register(CrowdCollector(crowd_health(db, settings_of(request).crowd), statuses))
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")
