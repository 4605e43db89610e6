"""Start a batch's retry from the web: on the retry-batch deployment's work pool when
Kerani runs with one, else in a thread of the calling process.

The agency page's Retry button calls `start_retry`. With KERANI_REASSEMBLY_TRIGGER=event or
deployment (Kerani runs with a Prefect server and a work pool), the retry is a run of the
`retry-batch` deployment, so the pages are read where the pool's workers are; if Prefect
cannot be reached, or in the default inline mode, the retry-batch flow runs in a thread
here, as `kerani retry` would. Either way only failed pages are read again
(kerani.ingest.retry), so a second press never duplicates anything.
"""

from __future__ import annotations

import logging
import threading

from kerani.core.settings import Settings, using_settings
from kerani.flows.triggers import run_deployment, trigger_mode

log = logging.getLogger(__name__)

RETRY_DEPLOYMENT = "retry-batch/retry-batch"


class RetryRuns:
    """The retries running in this process, one per batch at a time (held by the web app)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[str] = set()

    def running(self, batch_id: str) -> bool:
        """Whether a retry of this batch runs in this process now."""
        with self._lock:
            return batch_id in self._running

    def start(self, settings: Settings, batch_id: str, template: str | None) -> str:
        """Start the retry of a batch (with `template`, a stored `name:version`); say where
        it runs: `deployment`, `here`, or `running` when one of this batch runs already."""
        if trigger_mode() in ("event", "deployment"):
            try:
                run_deployment(
                    RETRY_DEPLOYMENT, {"batch_id": batch_id, "template": template}, timeout=0
                )
                return "deployment"
            except Exception as e:  # Prefect down or no such deployment: retry here instead
                log.warning(
                    "retry of %s runs here: %s unreachable (%s)", batch_id, RETRY_DEPLOYMENT, e
                )
        with self._lock:
            if batch_id in self._running:
                return "running"
            self._running.add(batch_id)
        thread = threading.Thread(
            target=self._run, args=(settings, batch_id, template), name=f"retry-{batch_id[:12]}"
        )
        thread.daemon = True
        thread.start()
        return "here"

    def _run(self, settings: Settings, batch_id: str, template: str | None) -> None:
        from kerani.flows.digitise import retry_batch

        try:
            with using_settings(settings):
                retry_batch(batch_id, template)
        except Exception:
            # The pages that still fail say why on the batch page; the trace is for the log.
            log.exception("retry of batch %s failed", batch_id)
        finally:
            with self._lock:
                self._running.discard(batch_id)
