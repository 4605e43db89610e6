"""`kerani bench scale`: pre-OCR pages per minute on the flow's threads and on a local Dask
cluster of 1, 2, ... worker processes, for the plan of a million pages.

Each configuration ingests the same synthetic forms (fresh SQLite and blob folder each) and
times the pre-OCR subflow alone (ingest and routing aside): its wall time, and its steady pace
from the first page's fields stored to the last's (the runner's start-up left out: a Dask
cluster's processes, paid once per chunk).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import func, select

from kerani.core.settings import (
    BlobSettings,
    CoreSettings,
    DatabaseSettings,
    OcrSettings,
    ScaleSettings,
    Settings,
    using_settings,
)
from kerani.evaluation.synthetic import generate_dataset
from kerani.flows.digitise import preocr_batch, preocr_runner
from kerani.forms.catalogue import stored_template
from kerani.forms.templates import load_template
from kerani.ingest.batches import ingest_paths
from kerani.storage import schema
from kerani.storage.database import as_utc, close_engine
from kerani.storage.stores import open_stores


def _settings(root: Path, scale: ScaleSettings, threads: int) -> Settings:
    return Settings(
        core=CoreSettings(data_dir=root),
        database=DatabaseSettings(url=SecretStr(f"sqlite:///{root / 'kerani.db'}")),
        blobs=BlobSettings(url=str(root / "blobs")),
        ocr=OcrSettings(workers=threads),
        scale=scale,
    )


def _time_preocr(settings: Settings, pages_dir: Path) -> tuple[float, float, dict[str, int]]:
    """Ingest the pages, then time one pre-OCR subflow run over all of them: its wall time,
    and the time from the first page's fields stored to the last's (the steady pace, without
    the runner's start-up: a Dask cluster's processes, Prefect's first run)."""
    stores = open_stores(settings)
    report = ingest_paths(
        stores.db,
        stores.blobs,
        [pages_dir],
        stored_template(stores.db, "bantuan_form"),
        settings.ingest,
        None,
    )
    with using_settings(settings):
        runner = preocr_runner(settings)
        start = time.perf_counter()
        outcome = preocr_batch.with_options(task_runner=runner)(report.batch_id)
        seconds = time.perf_counter() - start
    r = schema.ocr_readings
    with stores.db.connect() as conn:
        first, last = conn.execute(select(func.min(r.c.created_at), func.max(r.c.created_at))).one()
    close_engine(settings.database_url)
    return seconds, (as_utc(last) - as_utc(first)).total_seconds(), outcome


def run(pages: int, dask_workers: list[int], threads: list[int]) -> dict[str, Any]:
    """Pages per minute for each configuration, over the same `pages` synthetic forms."""
    figures: dict[str, Any] = {"pages": pages}
    with tempfile.TemporaryDirectory(prefix="kerani-scale-") as tmp:
        root = Path(tmp)
        generate_dataset(load_template("bantuan_form"), root / "forms", count=pages, seed=21)
        configs = [(f"threads_{n}", ScaleSettings(runner="threads"), n) for n in threads]
        configs += [
            (f"dask_{n}_workers", ScaleSettings(runner="dask", dask_workers=n), 1)
            for n in dask_workers
        ]
        for name, scale, n_threads in configs:
            settings = _settings(root / name, scale, n_threads)
            seconds, steady, outcome = _time_preocr(settings, root / "forms" / "pages")
            figures[name] = {
                "seconds": round(seconds, 1),
                "pages_per_minute": round(60 * pages / seconds, 1),
                # What a long batch sees: the start-up is paid once per chunk. Between the
                # first page stored and the last, pages - 1 were read.
                "steady_pages_per_minute": round(60 * (pages - 1) / max(steady, 1e-6), 1),
                "pages_read": outcome.get("ocred", 0),
            }
    return figures
