"""Webhooks of completed batches: signed, never sent into Kerani's own network, retried."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from kerani.core.errors import BadInputError
from kerani.core.settings import ApiSettings
from kerani.flows.webhooks import check_webhook_url, deliver_due, signature, verify_signature
from kerani.forms.catalogue import stored_template
from kerani.ingest.intake import create_open_batch
from kerani.people.api_tokens import create_token
from kerani.people.workers import add_person, agency_named
from kerani.records.completion import mark_complete
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.conftest import free_port_for_tests


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped
        "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of 169.254.169.254
        "http://[2002:7f00:1::]/hook",  # 6to4 of 127.0.0.1
        "http://localhost:99999/hook",  # no such port
        "ftp://example.org/hook",
        "http://user:pw@example.org/hook",
    ],
)
def test_a_webhook_into_a_private_network_or_a_broken_url_is_one_clear_line(url: str) -> None:
    with pytest.raises(BadInputError, match=r"^webhook_url: "):
        check_webhook_url(url, allow_private=False)


def test_a_signature_checks_the_body_the_secret_and_the_time() -> None:
    body = b'{"event": "batch.completed"}'
    header = signature("whsec_a", 1_700_000_000, body)
    assert not verify_signature("whsec_a", header, body)  # too old
    import time

    now = signature("whsec_a", int(time.time()), body)
    assert verify_signature("whsec_a", now, body)
    assert not verify_signature("whsec_b", now, body)
    assert not verify_signature("whsec_a", now, body + b" ")


class _Receiver:
    def __init__(self) -> None:
        self.got: list[bytes] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port_for_tests()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_host_that_turns_private_after_the_check_gets_nothing(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = _Receiver()
    port = receiver.server.server_port
    real = socket.getaddrinfo
    asked: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        # rebind.test: public the first time it is asked, Kerani's own loopback after.
        if host == "rebind.test":
            asked.append(host)
            address = "93.184.216.34" if len(asked) == 1 else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    api = ApiSettings()
    add_person(stores.db, "jkm", "agency")
    jkm = agency_named(stores.db, "jkm")
    token = create_token(stores.db, jkm, "hooks")
    url = check_webhook_url(f"http://rebind.test:{port}/hook", allow_private=False)
    batch = create_open_batch(
        stores.db, stored_template(stores.db, "receipt"), jkm, "b", url, token.id
    )
    with stores.db.begin() as conn:
        conn.execute(
            schema.batches.update().where(schema.batches.c.id == batch).values(status="ingested")
        )
    assert mark_complete(stores.db, batch)
    assert deliver_due(stores.db, api) == {"delivered": 0, "failed": 1}
    assert receiver.got == []
    w = schema.webhook_deliveries
    with stores.db.connect() as conn:
        row = conn.execute(select(w).where(w.c.batch_id == batch)).one()
    assert row.delivered_at is None and "private, loopback" in row.last_error
    assert row.attempts == 1
    # Allowed by the operator (a receiver on the same network), it lands, signed.
    with stores.db.begin() as conn:
        conn.execute(w.update().values(next_attempt_at=row.created_at))
    assert deliver_due(stores.db, ApiSettings(webhook_allow_private=True))["delivered"] == 1
    assert len(receiver.got) == 1
    receiver.server.shutdown()
