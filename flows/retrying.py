"""Start a batch's flow from the web: on its deployment's work pool when Kerani runs with
one, else in a thread of the calling process.

The agency page's Retry button starts `retry-batch`; the agency API's start starts
`process-batch`. With KERANI_REASSEMBLY_TRIGGER=event or deployment (Kerani runs with a
Prefect server and a work pool), the flow is a run of its deployment, so the pages are read
where the pool's workers are; if Prefect cannot be reached, or in the default inline mode,
the flow runs in a thread here, as `kerani retry` would. Either way a second start never
duplicates anything: a retry reads only failed pages (kerani.ingest.retry), and a batch
is started once (kerani.ingest.intake.begin_intake).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kerani.core.settings import Settings, using_settings
from kerani.flows.triggers import run_deployment, trigger_mode

log = logging.getLogger(__name__)

RETRY_DEPLOYMENT = "retry-batch/retry-batch"
PROCESS_DEPLOYMENT = "process-batch/process-batch"


class BatchRuns:
    """The flows of batches running in this process, one per batch at a time (held by the
    web app)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def running(self, batch_id: str) -> bool:
        """Whether a flow of this batch runs in this process now."""
        with self._lock:
            return batch_id in self._running

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no flow of this process runs (a test's end, a shutdown); True if so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running:
                    return True
            time.sleep(0.1)
        return False

    def start(self, settings: Settings, batch_id: str, template: str | None) -> str:
        """Start the retry of a batch (with `template`, a stored `name:version`); say where
        it runs: `deployment`, `here`, or `running` when one of this batch runs already."""
        from kerani.flows.digitise import retry_batch

        parameters = {"batch_id": batch_id, "template": template}
        return self.start_flow(settings, RETRY_DEPLOYMENT, retry_batch, parameters)

    def start_processing(self, settings: Settings, batch_id: str) -> str:
        """Start reading a started API batch (process-batch); where it runs, as `start`."""
        from kerani.flows.digitise import process_batch

        return self.start_flow(settings, PROCESS_DEPLOYMENT, process_batch, {"batch_id": batch_id})

    def start_flow(
        self,
        settings: Settings,
        deployment: str,
        flow: Callable[..., Any],
        parameters: dict[str, Any],
    ) -> str:
        """Run `flow` with `parameters` (ids only) on its deployment, or here."""
        batch_id = str(parameters["batch_id"])
        if trigger_mode() in ("event", "deployment"):
            try:
                run_deployment(deployment, parameters, timeout=0)
                return "deployment"
            except Exception as e:  # Prefect down or no such deployment: run here instead
                log.warning("%s of %s runs here: unreachable (%s)", deployment, batch_id, e)
        with self._lock:
            if batch_id in self._running:
                return "running"
            self._running.add(batch_id)
        thread = threading.Thread(
            target=self._run,
            args=(settings, flow, parameters),
            name=f"{deployment.split('/')[0]}-{batch_id[:12]}",
        )
        thread.daemon = True
        thread.start()
        return "here"

    def _run(
        self, settings: Settings, flow: Callable[..., Any], parameters: dict[str, Any]
    ) -> None:
        batch_id = str(parameters["batch_id"])
        try:
            with using_settings(settings):
                flow(**parameters)
        except Exception:
            # The pages that fail say why on the batch page; the trace is for the log.
            log.exception("flow %s of batch %s failed", getattr(flow, "name", flow), batch_id)
        finally:
            with self._lock:
                self._running.discard(batch_id)
