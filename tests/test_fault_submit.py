"""`kerani submit` killed with SIGKILL at random points, then run again: every page is there
once, read once and routed once, on SQLite and PostgreSQL.

The kill takes the whole process group (the CLI and the Prefect server it started), as a
power cut or an out-of-memory kill would. The points are drawn at random and printed, so a
failure can be replayed with KERANI_TEST_KILL_SEED.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from kerani.evaluation.synthetic import generate_dataset
from kerani.forms.templates import load_template

pytestmark = pytest.mark.slow

PAGES = 3
KILLS = 2
KERANI = Path(sys.executable).with_name("kerani")


def submit(env: dict[str, str], pages: Path) -> subprocess.Popen[bytes]:
    """`kerani submit` as a user starts it, in a process group of its own."""
    return subprocess.Popen(
        [str(KERANI), "submit", str(pages), "--template", "bantuan_form"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def counts(url: str) -> dict[str, object]:
    """What the database holds of the batch, page by page."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            one = lambda q: conn.execute(sa.text(q)).scalar_one()  # noqa: E731
            return {
                "batches": one("select count(*) from batches"),
                "scans": one("select count(*) from scans"),
                "pages": one("select count(*) from pages"),
                "distinct pages": one("select count(distinct source_sha256) from pages"),
                # Routed, or complete already when every field was auto-accepted.
                "pages not routed": one(
                    "select count(*) from pages where status not in ('routed', 'complete')"
                ),
                "fields per page": sorted(
                    conn.execute(sa.text("select count(*) from fields group by page_id")).scalars()
                ),
                "fields read twice": one(
                    "select count(*) from (select page_id, name from fields"
                    " group by page_id, name having count(*) > 1) twice"
                ),
                "tasks of one field twice": one(
                    "select count(*) from (select field_id from tasks where field_id is not null"
                    " and status = 'open' group by field_id having count(*) > 1) twice"
                ),
            }
    finally:
        engine.dispose()


def intact(pages: int) -> dict[str, object]:
    """What counts() finds of one batch of `pages` bantuan_form pages that lost nothing and
    did nothing twice."""
    fields = len(load_template("bantuan_form").fields)
    return {
        "batches": 1,
        "scans": pages,
        "pages": pages,
        "distinct pages": pages,
        "pages not routed": 0,
        "fields per page": [fields] * pages,
        "fields read twice": 0,
        "tasks of one field twice": 0,
    }


def test_a_submit_killed_at_random_points_finishes_on_a_rerun_without_duplicates(
    tmp_path: Path, database_url: str
) -> None:
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=PAGES, seed=5)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KERANI_", "PREFECT_"))}
    env |= {
        "KERANI_DATA_DIR": str(tmp_path / "data"),
        "KERANI_DB_URL": database_url,
        "KERANI_BLOB_URL": str(tmp_path / "blobs"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    seed = int(os.environ.get("KERANI_TEST_KILL_SEED", time.time_ns() % 10**6))
    draws = random.Random(seed)
    killed_at = []
    for _ in range(KILLS):
        process = submit(env, forms / "pages")
        # Anywhere from start-up (Prefect's server starting, migrations) to mid-OCR.
        delay = draws.uniform(1.0, 25.0)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            kill_group(process)
            killed_at.append(round(delay, 1))
    print(f"KERANI_TEST_KILL_SEED={seed}: killed after {killed_at} s")
    finished = submit(env, forms / "pages")
    output, _ = finished.communicate(timeout=600)
    assert finished.returncode == 0, output.decode(errors="replace")
    assert counts(database_url) == intact(PAGES), (
        f"KERANI_TEST_KILL_SEED={seed}, killed after {killed_at} s"
    )
