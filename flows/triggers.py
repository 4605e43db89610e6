"""What happens when a document's last field settles: its record is rebuilt, for certain.

The settle writes a row into the outbox (kerani.storage.outbox, table settle_outbox) in its
own transaction. Then, by $KERANI_REASSEMBLY_TRIGGER:

- `inline` (the embedded default): the page is reassembled here, in the calling process.
- `event`: a publisher sends every open row to Prefect as one event, `kerani.documents.
  settled`, which the `reassemble-settled` deployment's trigger (prefect.yaml) turns into
  one flow run for all of them. The publisher waits $KERANI_REASSEMBLY_WINDOW_S seconds
  (60) after a settle, so that a minute of settles makes one run, not one run each.
- `deployment`: the same, but the publisher starts the deployment's run directly.

The event is posted to Prefect's API and the rows are marked sent only once the server has
it. When Prefect cannot be reached, the publisher reassembles the documents here instead;
rows that were sent but whose run never closed them (no worker, a lost run) are taken back
after STALE_AFTER by the next publication or by the `reconcile-records` flow. Prefect is
imported only when an event or a deployment is asked for, so the review app starts without.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from kerani.core.errors import KeraniError
from kerani.flows.documents import Finished, finish_settled
from kerani.storage import outbox
from kerani.storage.database import utcnow

log = logging.getLogger(__name__)

TRIGGER_ENV = "KERANI_REASSEMBLY_TRIGGER"
WINDOW_ENV = "KERANI_REASSEMBLY_WINDOW_S"
TRIGGER_MODES = ("inline", "event", "deployment")
DEFAULT_WINDOW_S = 60.0
SETTLED_EVENT = "kerani.documents.settled"
REASSEMBLY_DEPLOYMENT = "reassemble-settled/reassemble-settled"
# A publication still open this long after it was sent lost its run (no worker, a crash):
# the next publisher, or reconcile-records, reassembles its documents itself.
STALE_AFTER = timedelta(minutes=5)


def publication_resource(publication: str, pages: int) -> dict[str, str]:
    """The Prefect event resource that stands for one publication of the outbox."""
    return {
        "prefect.resource.id": f"kerani.outbox.{publication}",
        "kerani.publication": publication,
        "kerani.pages": str(pages),
    }


def send_event(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
    """Post one event to the Prefect server's API; return once the server has it."""
    from prefect.client.orchestration import get_client
    from prefect.events import Event, Resource
    from prefect.settings import PREFECT_API_URL

    # Prefect's own emit_event hands events to a background worker that drops them when the
    # server is down ("EventsWorker failed with N pending items"): here a failure raises.
    if not PREFECT_API_URL.value():
        raise ConnectionError("PREFECT_API_URL is not set: no Prefect server takes events")
    sent = Event(event=event, resource=Resource(resource), payload=payload)
    body = sent.model_dump(mode="json")
    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=[body]).raise_for_status()


def run_deployment(name: str, parameters: dict[str, Any], timeout: float) -> None:
    """Start a Prefect deployment's run without waiting for it."""
    from prefect.deployments import run_deployment as prefect_run_deployment

    prefect_run_deployment(name, parameters=parameters, timeout=timeout)


@dataclass(frozen=True)
class Published:
    """What one publication did: how many documents it sent to Prefect, and which it
    reassembled here (Prefect unreachable, or runs that never came)."""

    publication: str
    how: str  # event | deployment | inline (Prefect unreachable) | none (nothing open)
    sent: int = 0
    here: list[Finished] = field(default_factory=list)


def publish_settled(db: Engine, mode: str = "event") -> Published:
    """Send every outbox row nobody took yet to Prefect, in one event (or deployment run);
    reassemble them here if Prefect cannot be reached. Rows sent long ago and still open
    are reassembled here too."""
    stale = outbox.take(
        db, outbox.new_publication("inline"), published_before=utcnow() - STALE_AFTER
    )
    here = finish_settled(db, stale) if stale else []
    publication = outbox.new_publication("deployment" if mode == "deployment" else "event")
    rows = outbox.take(db, publication, unpublished=True)
    if not rows:
        return Published(publication, "none", here=here)
    try:
        if mode == "deployment":
            run_deployment(REASSEMBLY_DEPLOYMENT, {"publication": publication}, timeout=0)
        else:
            send_event(
                SETTLED_EVENT,
                publication_resource(publication, len(rows)),
                {"publication": publication, "pages": len(rows)},
            )
    except Exception as e:  # any failure to reach Prefect: do the work here instead
        log.warning(
            "could not reach Prefect (%s: %s); reassembling %s documents here",
            type(e).__name__,
            e,
            len(rows),
        )
        return Published(publication, "inline", here=here + finish_settled(db, rows))
    return Published(publication, mode, sent=len(rows), here=here)


class _Publisher:
    """Publishes a database's outbox a window after the first settle that finds no
    publication pending, so that the settles of that window travel in one event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._timers: dict[int, tuple[threading.Timer, Engine, str]] = {}

    def soon(self, db: Engine, mode: str, window: float) -> None:
        """Publish `db`'s outbox in `window` seconds, unless a publication is due already."""
        with self._lock:
            if id(db) in self._timers:
                return
            timer = threading.Timer(window, self._fire, args=(db,))
            timer.daemon = True
            self._timers[id(db)] = (timer, db, mode)
            timer.start()

    def _fire(self, db: Engine) -> None:
        with self._lock:
            _, _, mode = self._timers.pop(id(db), (None, db, "event"))
        _publish_logged(db, mode)

    def flush(self) -> None:
        """Publish every pending outbox now (at exit: a timer's thread dies with the process)."""
        with self._lock:
            due = list(self._timers.values())
            self._timers.clear()
        for timer, db, mode in due:
            timer.cancel()
            _publish_logged(db, mode)


def _publish_logged(db: Engine, mode: str) -> Published | None:
    try:
        return publish_settled(db, mode)
    except (KeraniError, SQLAlchemyError) as e:
        # The rows stay in the outbox: the next publication or reconcile-records takes them.
        log.warning("publishing the settle outbox failed: %s: %s", type(e).__name__, e)
        return None


_publisher = _Publisher()
atexit.register(_publisher.flush)


def flush_publications() -> None:
    """Publish now what waits for its window (tests, and a process about to end)."""
    _publisher.flush()


def trigger_mode(mode: str | None = None) -> str:
    """The reassembly trigger asked for, else $KERANI_REASSEMBLY_TRIGGER (inline if unknown)."""
    mode = mode or os.environ.get(TRIGGER_ENV, "inline")
    if mode not in TRIGGER_MODES:
        log.warning("%s=%r is not one of %s; reassembling inline", TRIGGER_ENV, mode, TRIGGER_MODES)
        return "inline"
    return mode


def publication_window() -> float:
    """Seconds a publisher gathers settles into one event ($KERANI_REASSEMBLY_WINDOW_S)."""
    raw = os.environ.get(WINDOW_ENV, "")
    try:
        window = float(raw) if raw.strip() else DEFAULT_WINDOW_S
    except ValueError:
        window = -1.0
    if window < 0:
        log.warning("%s=%r is not a number of seconds; using %s", WINDOW_ENV, raw, DEFAULT_WINDOW_S)
        return DEFAULT_WINDOW_S
    return window


def document_settled(
    db: Engine, page_id: int, mode: str | None = None, window: float | None = None
) -> str:
    """The last field of a page settled: have it reassembled; return how: inline, queued
    (for the publication at the end of the window), event or deployment (sent now), taken
    (another publication carries it), or failed (left to a later run)."""
    mode = trigger_mode(mode)
    try:
        # The answer's transaction wrote the row already; a settle made elsewhere (staff
        # keying gold) did not.
        outbox.ensure_settled(db, page_id)
        if mode == "inline":
            rows = outbox.take(db, outbox.new_publication("inline"), page_ids=[page_id])
            done = finish_settled(db, rows)
            return "failed" if any(d.status == "failed" for d in done) else "inline"
        window = publication_window() if window is None else window
        if window > 0:
            _publisher.soon(db, mode, window)
            return "queued"
        published = publish_settled(db, mode)
    except (KeraniError, SQLAlchemyError) as e:
        # The worker's answer is recorded either way; reconcile-records finds the page.
        log.warning("reassembly of page %s failed: %s: %s", page_id, type(e).__name__, e)
        return "failed"
    return "taken" if published.how == "none" else published.how
