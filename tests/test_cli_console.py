"""The console in the CLI: `kerani people list / set / revoke`, `kerani crowd`, and
`kerani status --json`, as an operator at the server's shell runs them."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from kerani.cli import app
from kerani.core.settings import Settings
from kerani.storage import schema
from kerani.storage.stores import open_stores
from tests.factories import seed_page

GUESSES = [("city", "text", "SHAH ALAM", 40.0), ("state", "text", "SELANGOR", 40.0)]


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_people_list_set_and_revoke_from_the_shell_are_audited(env: Path) -> None:
    run("people", "add", "ana")
    run("people", "add", "ben", "--proven")
    listed = json.loads(run("people", "list", "--json"))
    assert {w["name"]: w["status"] for w in listed} == {"ana": "probation", "ben": "worker"}
    assert "ben" in run("people", "list", "--search", "BE")
    assert run("people", "set", "ana", "--paused", "--trusted").strip() == "ana: paused, trusted"
    assert run("people", "set", "ana", "--paused").strip() == "ana: nothing to change"
    refused = CliRunner().invoke(app, ["people", "revoke", "ben"])
    assert refused.exit_code != 0 and "add --yes" in refused.output
    assert run("people", "revoke", "ben", "--yes").strip() == "ben: revoked"
    unknown = CliRunner().invoke(app, ["people", "set", "zed", "--paused"])
    assert unknown.exit_code != 0 and "zed" in unknown.output
    db = open_stores(Settings.load()).db
    log = schema.audit_log
    with db.connect() as conn:
        details = conn.execute(select(log.c.detail).order_by(log.c.id)).scalars().all()
    assert all(d.endswith("(command line)") for d in details) and len(details) == 3


def test_crowd_and_status_as_json(env: Path) -> None:
    stores = open_stores(Settings.load())
    seed_page(stores, GUESSES)
    crowd = json.loads(run("crowd", "--json"))
    assert [(o["field_type"], o["total"]) for o in crowd["open_tasks"]] == [("text", 2)]
    assert "Open tasks by field type and wait" in run("crowd")
    (batch,) = json.loads(run("status", "--json"))
    assert batch["fields"] == 2 and batch["waiting_for_people"] == 2
