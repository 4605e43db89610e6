"""What happens when a document's last field settles: its record is rebuilt.

By $KERANI_REASSEMBLY_TRIGGER: `inline` (the embedded default) reassembles the page in the
calling process; `event` emits the Prefect event `kerani.document.settled`, which the
deployment trigger in prefect.yaml turns into a `reassemble-document` run; `deployment`
starts that deployment directly. Either falls back to inline when Prefect cannot be reached.
Prefect is imported only when an event or a deployment is asked for, so that the review app
starts without it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sqlalchemy import Engine

from kerani.core.errors import KeraniError
from kerani.flows.documents import finish_document

log = logging.getLogger(__name__)

TRIGGER_ENV = "KERANI_REASSEMBLY_TRIGGER"
TRIGGER_MODES = ("inline", "event", "deployment")
SETTLED_EVENT = "kerani.document.settled"
REASSEMBLY_DEPLOYMENT = "reassemble-document/reassemble-document"


def page_resource(page_id: int) -> dict[str, str]:
    """The Prefect event resource that stands for one page (document) of Kerani."""
    return {"prefect.resource.id": f"kerani.page.{page_id}", "kerani.page-id": str(page_id)}


def emit_event(event: str, resource: dict[str, str], payload: dict[str, Any]) -> object | None:
    """Prefect's emit_event (None when no Prefect server takes events)."""
    from prefect.events import emit_event as prefect_emit_event

    return prefect_emit_event(event, resource=resource, payload=payload)


def run_deployment(name: str, parameters: dict[str, Any], timeout: float) -> None:
    """Start a Prefect deployment's run without waiting for it."""
    from prefect.deployments import run_deployment as prefect_run_deployment

    prefect_run_deployment(name, parameters=parameters, timeout=timeout)


def document_settled(db: Engine, page_id: int, mode: str | None = None) -> str:
    """The last field of a page settled: have it reassembled; return how it was done."""
    mode = mode or os.environ.get(TRIGGER_ENV, "inline")
    if mode not in TRIGGER_MODES:
        log.warning("%s=%r is not one of %s; reassembling inline", TRIGGER_ENV, mode, TRIGGER_MODES)
    elif mode == "event":
        event = emit_event(
            SETTLED_EVENT, resource=page_resource(page_id), payload={"page_id": page_id}
        )
        if event is not None:
            return "event"
        log.warning("no Prefect server takes events; reassembling page %s inline", page_id)
    elif mode == "deployment":
        try:
            run_deployment(REASSEMBLY_DEPLOYMENT, parameters={"page_id": page_id}, timeout=0)
            return "deployment"
        except Exception as e:  # any failure to reach Prefect: do the work here instead
            log.warning("could not start %s (%s); reassembling inline", REASSEMBLY_DEPLOYMENT, e)
    # Inline (or as a fallback): a page's reassembly is a few queries, cheap in a request.
    try:
        finish_document(db, page_id)
    except KeraniError as e:
        # The worker's answer is recorded either way; the reconcile flow will retry the page.
        log.warning("reassembly of page %s failed: %s", page_id, e)
        return "failed"
    return "inline"
