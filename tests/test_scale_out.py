"""Pre-OCR fanned out over Dask (prefect-dask's DaskTaskRunner on a local cluster of
processes) and split into chunks: every page read once, with the settings the entry point
activated reaching the worker processes through their environment."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kerani.core.settings import ScaleSettings, Settings, settings_environment, using_settings
from kerani.evaluation.synthetic import generate_dataset
from kerani.flows.digitise import _chunks, submit_batch
from kerani.forms.templates import load_template
from kerani.storage import schema
from kerani.storage.stores import open_stores

pytestmark = pytest.mark.slow


class Said(logging.Handler):
    """The messages logged while it is attached."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_batch_is_ocred_on_a_local_dask_cluster_chunk_by_chunk(
    settings: Settings, tmp_path: Path, prefect_server: None, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterStartTime,
    )

    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=3, seed=4)
    dask = settings.model_copy(
        update={"scale": ScaleSettings(runner="dask", dask_workers=2, chunk_pages=2)}
    )
    started = datetime.now(UTC)
    # Whatever an earlier `kerani` command in this process quietened (Prefect's logger).
    caplog.set_level(logging.INFO, logger="prefect")
    said = Said()
    logging.getLogger("prefect").addHandler(said)  # the task runner's own log lines
    try:
        with using_settings(dask):
            report = submit_batch([str(forms / "pages")], "bantuan_form")
    finally:
        logging.getLogger("prefect").removeHandler(said)
    assert report["ocr"] == {"ocred": 3}
    assert "Creating a new Dask cluster with `distributed.deploy.local.LocalCluster`" in said.lines
    # Two chunks (pages 1-2, then page 3), each its own run of the pre-OCR subflow.
    with get_client(sync_client=True) as client:
        chunks = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["pre-ocr-batch"])),
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started)),
        )
    assert sorted(
        (r.parameters["first_page_id"], r.parameters["last_page_id"]) for r in chunks
    ) == [
        (1, 2),
        (3, 3),
    ]
    db = open_stores(settings).db
    p, f = schema.pages, schema.fields
    with db.connect() as conn:
        statuses = conn.execute(select(p.c.status, func.count()).group_by(p.c.status)).all()
        per_page = conn.execute(select(func.count()).select_from(f).group_by(f.c.page_id)).all()
    # Routed (tasks for people) or complete (every field auto-accepted): none left unread.
    assert set(dict(statuses)) <= {"routed", "complete"} and sum(dict(statuses).values()) == 3
    assert [n for (n,) in per_page] == [len(load_template("bantuan_form").fields)] * 3


def test_the_chunks_cover_every_page_once() -> None:
    pages: list[tuple[int, str, int | None]] = [(i, "t", None) for i in (3, 4, 8, 9, 12)]
    assert _chunks(pages, 2) == [(3, 4), (8, 9), (12, 12)]
    assert _chunks(pages, 10) == [(3, 12)]
    assert _chunks([], 2) == []


def test_the_settings_round_trip_through_the_environment(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in settings_environment(settings).items():
        monkeypatch.setenv(name, value)
    assert Settings.load() == settings
