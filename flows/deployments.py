"""Sending work to a Prefect work pool instead of running it in the calling process.

`kerani submit --deployment` hands a batch to the `submit-batch` deployment: a worker of the
pool ingests, pre-OCRs and routes it, so the machine that submits needs no Tesseract and the
work runs where the pool's workers are. The paths must be readable by those workers (a
shared folder), and the database and blob store are the ones they are configured with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from kerani.core.errors import NotFoundError, UnreachableError

SUBMIT_DEPLOYMENT = "submit-batch/submit-batch"
HEALTH_TIMEOUT_S = 15.0  # a busy server on SQLite can take seconds to answer


@dataclass(frozen=True)
class SentRun:
    """A flow run created on the Prefect server for a deployment."""

    flow_run_id: str
    deployment: str
    api_url: str


def prefect_api_url() -> str:
    """The Prefect server's API URL, or one clear line saying none is set or it is down."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        raise UnreachableError(
            "no Prefect server to send to: set PREFECT_API_URL (e.g. "
            "http://127.0.0.1:4200/api) to the server the work pool's workers use"
        )
    try:
        up = httpx.get(f"{url}/health", timeout=HEALTH_TIMEOUT_S).status_code == 200
    except httpx.HTTPError as e:
        raise UnreachableError(f"cannot reach the Prefect server at {url}: {e}") from e
    if not up:
        raise UnreachableError(f"the Prefect server at {url} does not say it is healthy")
    return url


def send_batch(
    paths: list[Path], template: str, agency: str | None, deployment: str = SUBMIT_DEPLOYMENT
) -> SentRun:
    """Create a run of the submit-batch deployment for these files (absolute paths)."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    url = prefect_api_url()
    parameters = {
        "paths": [str(p.resolve()) for p in paths],
        "template": template,
        "agency": agency,
    }
    try:
        run: Any = run_deployment(deployment, parameters=parameters, timeout=0)  # sync here
    except ObjectNotFound as e:
        raise NotFoundError(
            f"no deployment {deployment!r} on the Prefect server at {url}: "
            "deploy it with `prefect deploy --all` (see prefect.yaml)"
        ) from e
    except httpx.HTTPError as e:
        raise UnreachableError(f"cannot reach the Prefect server at {url}: {e}") from e
    return SentRun(str(run.id), deployment, url)
