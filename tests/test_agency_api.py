"""The agency API end to end over HTTP: two agencies' tokens, uploads whole and chunked,
S3-prefix intake from moto's server, progress, records, downloads, a signed webhook,
cancel; one agency never sees nor infers the other's batches."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from sqlalchemy import select

from kerani.core.settings import ApiSettings, Settings
from kerani.evaluation.ground_truth import read_truth
from kerani.evaluation.synthetic import generate_dataset
from kerani.flows.webhooks import SIGNATURE_HEADER, verify_signature
from kerani.forms.templates import load_template
from kerani.ocr.calibration import BUNDLED_CALIBRATIONS
from kerani.people.api_tokens import create_token, revoke_token
from kerani.people.workers import add_person, agency_named
from kerani.review_ui.app import create_app
from kerani.review_ui.server import BackgroundServer
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.conftest import free_port_for_tests

MB = 1024 * 1024
BUCKET = "agency-drop"


class Receiver:
    """An agency's webhook endpoint on loopback: keeps each request's headers and body."""

    def __init__(self) -> None:
        got: list[tuple[dict[str, str], bytes]] = []
        self.got = got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                got.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port_for_tests()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/kerani"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on loopback with the agencies' drop bucket."""
    from moto.server import ThreadedMotoServer

    port = free_port_for_tests()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    _s3(url).create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _s3(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture
def forms(tmp_path: Path) -> tuple[Path, dict[str, dict[str, str]]]:
    """Three synthetic bantuan forms and their true values, by file name."""
    generate_dataset(load_template("bantuan_form"), tmp_path / "forms", count=3, seed=11)
    truth = {
        Path(page.page).name: {f.name: f.text for f in page.fields}
        for page in read_truth(tmp_path / "forms")
    }
    return tmp_path / "forms" / "pages", truth


def _routed(view: dict[str, Any]) -> bool:
    """Every page read and every field routed: auto-accepted, or with people."""
    routed = view["waiting_for_people"] + view["auto_accepted"] + view["settled_by_people"]
    return bool(view["status"] in ("in progress", "complete") and view["fields"] == routed > 0)


def _wait(client: httpx.Client, batch: str, done: Any, seconds: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        view = client.get(f"/api/v1/batches/{batch}").json()
        if done(view):
            return dict(view)
        time.sleep(0.5)
    raise AssertionError(f"batch {batch} never got there: {view}")


def _answer_everything(base: str, stores: Stores, truth: dict[str, dict[str, str]]) -> int:
    """Two proven workers answer every task with the true value of its page's field."""
    t, f, p, s = schema.tasks, schema.fields, schema.pages, schema.scans
    answered = 0
    for name in ("ana", "ben"):
        code = add_person(stores.db, name, "worker", proven=True, cleared=True, practised=True)
        auth = {"Authorization": f"Bearer {code}"}
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(200):
                claim = client.post("/api/tasks/claim", headers=auth)
                if claim.status_code == 204:
                    break
                task = claim.json()
                with stores.db.connect() as conn:
                    filename = conn.execute(
                        select(s.c.filename)
                        .join(p, p.c.scan_id == s.c.id)
                        .join(f, f.c.page_id == p.c.id)
                        .join(t, t.c.field_id == f.c.id)
                        .where(t.c.id == task["task_id"])
                    ).scalar_one()
                value = truth[filename.rsplit("!", 1)[-1].rsplit("/", 1)[-1]][task["field"]]
                body = {"kind": "value", "value": value, "idempotency_key": secrets.token_hex(8)}
                reply = client.post(f"/api/tasks/{task['task_id']}/answer", json=body, headers=auth)
                assert reply.status_code == 200, reply.text
                answered += 1
            else:
                raise AssertionError("the queue never ran dry")
    return answered


def test_two_agencies_through_the_api(
    settings: Settings,
    stores: Stores,
    prefect_server: None,
    s3_endpoint: str,
    forms: tuple[Path, dict[str, dict[str, str]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pages, truth = forms
    # A calibration that trusts no reading: every field goes to people, so that the
    # batches wait for them (the bundled one may accept a clean synthetic form whole).
    calibrations = tmp_path / "calibrations"
    calibrations.mkdir()
    bundled = json.loads((BUNDLED_CALIBRATIONS / "bantuan_form.json").read_text())
    for rule in bundled["rules"].values():
        rule["min_confidence"] = None
    (calibrations / "bantuan_form.json").write_text(json.dumps(bundled))
    settings = settings.model_copy(
        update={
            "ocr": settings.ocr.model_copy(update={"calibration_dir": calibrations}),
            "api": ApiSettings(
                intake_s3_buckets=BUCKET,
                intake_s3_endpoint_url=s3_endpoint,
                intake_s3_access_key_id="test",
                intake_s3_secret_access_key="test",  # type: ignore[arg-type]
                webhook_allow_private=True,  # the receiver is on loopback
                webhook_poll_s=0.3,
            ),
        }
    )
    # The review app's threads read Prefect's server from the environment, as deployed.
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    for name in ("jkm", "lhdn"):
        add_person(stores.db, name, "agency")
    x_token = create_token(stores.db, agency_named(stores.db, "jkm"), "jkm's records system")
    y_token = create_token(stores.db, agency_named(stores.db, "lhdn"), "lhdn scripts")
    receiver = Receiver()
    app = create_app(settings, stores)
    server = BackgroundServer(app, "127.0.0.1", free_port_for_tests())
    server.start()
    x = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {x_token.token}"}, timeout=120
    )
    y = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {y_token.token}"}, timeout=120
    )
    try:
        # Nothing without a token; the schema documents the API to a token holder.
        assert httpx.get(f"{server.url}/api/v1/batches").status_code in (401, 403)
        schema_doc = x.get("/api/openapi.json").json()
        assert "/api/v1/batches" in schema_doc["paths"]
        assert "/api/v1/uploads/chunks/{upload_id}" in schema_doc["paths"]

        made = x.post(
            "/api/v1/batches",
            json={
                "name": "Bantuan Disember",
                "template": "bantuan_form",
                "webhook_url": receiver.url,
            },
        )
        assert made.status_code == 201, made.text
        batch_x = made.json()["batch_id"]
        assert made.json()["status"] == "open" and made.json()["name"] == "Bantuan Disember"

        # Two whole files in one multipart request, one in a folder.
        files = [
            ("files", ("form_001.png", (pages / "form_001.png").read_bytes(), "image/png")),
            ("files", ("scans/form_002.png", (pages / "form_002.png").read_bytes(), "image/png")),
        ]
        sent = x.post(f"/api/v1/uploads/{batch_x}/files", files=files)
        assert sent.status_code == 201, sent.text
        assert [f["name"] for f in sent.json()["stored"]] == ["form_001.png", "scans/form_002.png"]

        # A 50 MB zip in 8 MiB chunks, the line lost after the third.
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("more/form_003.png", (pages / "form_003.png").read_bytes())
            zf.writestr("more/filler.bin", os.urandom(50 * MB - 200 * 1024))
        big = buf.getvalue()
        assert len(big) > 49 * MB
        upload = x.post(
            f"/api/v1/uploads/{batch_x}/chunked", json={"filename": "big.zip", "size": len(big)}
        ).json()
        step = settings.api.chunk_max_bytes
        for offset in range(0, 3 * step, step):
            r = x.patch(
                upload["url"],
                content=big[offset : offset + step],
                headers={"Upload-Offset": str(offset)},
            )
            assert r.status_code == 200, r.text
        # Back on the line: where were we? A chunk sent at the wrong place is refused.
        state = x.get(upload["url"]).json()
        assert state["received"] == 3 * step and state["status"] == "receiving"
        wrong = x.patch(upload["url"], content=b"xx", headers={"Upload-Offset": "5"})
        assert wrong.status_code == 409 and str(3 * step) in wrong.json()["error"]
        # A chunk over the chunk limit never gets in.
        too_big = x.patch(
            upload["url"],
            content=b"0" * (step + 128 * 1024),
            headers={"Upload-Offset": str(3 * step)},
        )
        assert too_big.status_code == 413
        # Resuming by asking again for the same name and size gives the same upload.
        again = x.post(
            f"/api/v1/uploads/{batch_x}/chunked", json={"filename": "big.zip", "size": len(big)}
        ).json()
        assert again["upload_id"] == upload["upload_id"] and again["received"] == 3 * step
        for offset in range(state["received"], len(big), step):
            r = x.patch(
                upload["url"],
                content=big[offset : offset + step],
                headers={"Upload-Offset": str(offset)},
            )
            assert r.status_code == 200, r.text
        assert r.json()["status"] == "complete"

        # The other agency: the same scan in a batch of its own, and a batch from S3.
        made_y = y.post("/api/v1/batches", json={"name": "LHDN", "template": "bantuan_form:1"})
        batch_y = made_y.json()["batch_id"]
        y.post(
            f"/api/v1/uploads/{batch_y}/files",
            files=[("files", ("same.png", (pages / "form_001.png").read_bytes(), "image/png"))],
        ).raise_for_status()
        s3 = _s3(s3_endpoint)
        s3.put_object(
            Bucket=BUCKET, Key="lhdn/dec/a.png", Body=(pages / "form_002.png").read_bytes()
        )
        s3.put_object(Bucket=BUCKET, Key="lhdn/dec/notes.txt", Body=b"not a scan")
        from_s3 = y.post("/api/v1/batches", json={"name": "drop", "template": "bantuan_form"})
        batch_s3 = from_s3.json()["batch_id"]
        # Another agency's prefix, or a bucket not allowed, is refused by name.
        assert (
            y.post(
                f"/api/v1/batches/{batch_s3}/s3", json={"s3_url": f"s3://{BUCKET}/jkm/"}
            ).status_code
            == 400
        )
        assert (
            y.post(
                f"/api/v1/batches/{batch_s3}/s3", json={"s3_url": "s3://other/lhdn/"}
            ).status_code
            == 400
        )
        pointed = y.post(
            f"/api/v1/batches/{batch_s3}/s3", json={"s3_url": f"s3://{BUCKET}/lhdn/dec/"}
        )
        assert pointed.status_code == 200, pointed.text

        # Agency Y can neither see nor infer X's batch: the same answer as an unknown id.
        unknown = secrets.token_hex(16)
        for method, path in [
            ("GET", "/api/v1/batches/{}"),
            ("GET", "/api/v1/batches/{}/records"),
            ("GET", "/api/v1/batches/{}/exports"),
            ("GET", "/api/v1/batches/{}/exports/records.csv"),
            ("POST", "/api/v1/batches/{}/start"),
            ("POST", "/api/v1/batches/{}/cancel"),
            ("POST", "/api/v1/uploads/{}/chunked"),
        ]:
            theirs = y.request(method, path.format(batch_x), json={"filename": "a", "size": 1})
            nobody = y.request(method, path.format(unknown), json={"filename": "a", "size": 1})
            assert (theirs.status_code, theirs.text) == (nobody.status_code, nobody.text), path
            assert theirs.status_code == 404
        foreign_upload = y.get(upload["url"])
        assert (foreign_upload.status_code, foreign_upload.text) == (
            y.get("/api/v1/uploads/chunks/" + unknown).status_code,
            y.get("/api/v1/uploads/chunks/" + unknown).text,
        )
        assert [b["batch_id"] for b in y.get("/api/v1/batches").json()["batches"]] == [
            batch_s3,
            batch_y,
        ]

        # Start all three; each reads its own files.
        for client, batch in ((x, batch_x), (y, batch_y), (y, batch_s3)):
            started = client.post(f"/api/v1/batches/{batch}/start")
            assert started.status_code == 202, started.text
            assert client.post(f"/api/v1/batches/{batch}/start").status_code == 409
        read_x = _wait(x, batch_x, _routed)
        assert read_x["pages"] == 3
        assert [r["file"] for r in read_x["rejected"]] == ["big.zip!more/filler.bin"]
        read_y = _wait(y, batch_y, _routed)
        assert (read_y["pages"], read_y["pages_linked"]) == (1, 0)  # not linked to jkm's
        read_s3 = _wait(y, batch_s3, _routed)
        assert read_s3["pages"] == 1
        assert [r["file"] for r in read_s3["rejected"]] == ["notes.txt"]

        # Partly done: every document listed, waiting.
        waiting = x.get(f"/api/v1/batches/{batch_x}/records", params={"status": "waiting"}).json()
        assert waiting["total"] == 3 and all(d["waiting_fields"] > 0 for d in waiting["documents"])

        # Cancel the S3 batch: its tasks are withdrawn, nobody is asked about them.
        cancelled = y.post(f"/api/v1/batches/{batch_s3}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["tasks_withdrawn"] > 0

        truth_y = {"same.png": truth["form_001.png"]}
        answered = _answer_everything(server.url, stores, truth | truth_y)
        assert answered > 0
        done_x = _wait(x, batch_x, lambda v: v["status"] == "complete")
        assert done_x["records"] == 3
        records = x.get(f"/api/v1/batches/{batch_x}/records", params={"per_page": 2}).json()
        assert records["total"] == 3 and len(records["documents"]) == 2
        first = records["documents"][0]
        assert first["status"] == "done" and first["document"] == "big.zip!more/form_003.png"
        expected = truth["form_003.png"]
        assert {k: v["value"] for k, v in first["values"].items()} == expected
        # Each agency got its own record of the same scan.
        (doc_y,) = y.get(f"/api/v1/batches/{batch_y}/records").json()["documents"]
        assert doc_y["status"] == "done" and doc_y["document"] == "same.png"

        # Downloads.
        listed = x.get(f"/api/v1/batches/{batch_x}/exports").json()
        names = {f["name"] for f in listed["files"]}
        assert {"records.csv", "records.parquet", "records.jsonl"} <= names
        csv = x.get(f"/api/v1/batches/{batch_x}/exports/records.csv")
        assert csv.status_code == 200 and expected["postcode"] in csv.text
        assert x.get(f"/api/v1/batches/{batch_x}/exports/../../etc/passwd").status_code == 404
        assert {"dictionary.json", "audit.csv"} <= names
        pdf_name = next(n for n in names if n.startswith("pdf/") and "form_003" in n)
        assert any(n.startswith("alto/") for n in names)
        pdf = tmp_path / "form_003.pdf"
        pdf.write_bytes(x.get(f"/api/v1/batches/{batch_x}/exports/{pdf_name}").content)
        text = subprocess.run(
            ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
        ).stdout
        assert expected["postcode"] in text  # the settled values are the PDF's text layer

        # The webhook came, once, signed with the token's secret.
        deadline = time.monotonic() + 30
        while not receiver.got and time.monotonic() < deadline:
            time.sleep(0.2)
        hooks = [h for h in receiver.got if json.loads(h[1])["batch_id"] == batch_x]
        assert len(hooks) == 1
        headers, body = hooks[0]
        assert verify_signature(x_token.webhook_secret, headers[SIGNATURE_HEADER], body)
        assert not verify_signature(y_token.webhook_secret, headers[SIGNATURE_HEADER], body)
        assert json.loads(body)["records"] == 3 and json.loads(body)["event"] == "batch.completed"
        # ...and the Prefect event went to the Prefect server.
        w = schema.webhook_deliveries
        with stores.db.connect() as conn:
            rows = conn.execute(
                select(w.c.event, w.c.delivered_at).where(w.c.batch_id == batch_x)
            ).all()
        assert {r.event for r in rows if r.delivered_at} == {
            "batch.completed",
            "prefect:batch.completed",
        }

        # A revoked token stops at once.
        revoke_token(stores.db, x_token.id)
        assert x.get("/api/v1/batches").status_code == 403
    finally:
        # The batches' flows run in threads of the app: let them end before the database goes.
        assert app.state.retries.wait_idle(180)
        server.stop()
        receiver.server.shutdown()
