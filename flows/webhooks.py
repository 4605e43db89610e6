"""Deliver the notices of completed batches: the agency's webhook, and a Prefect event.

A webhook is a POST of JSON to the batch's `webhook_url`, signed with the webhook secret of
the token that created the batch, as Stripe and GitHub sign theirs:

    Kerani-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">

The receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares it in
constant time, and refuses old timestamps (replays). `Kerani-Delivery` is the same on every
attempt of one notice, so a receiver can drop the repeats of a delivery it took.

Rows of webhook_deliveries (queued by kerani.records.completion) are claimed one at a time
(the claim moves next_attempt_at, so two processes never send one notice at once), sent,
and marked delivered; a failure waits 30 s, 1 min, 2 min, ... up to ApiSettings'
webhook_attempts. Addresses on loopback, private or link-local networks are refused unless
the operator allows them (KERANI_API_WEBHOOK_ALLOW_PRIVATE).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
from sqlalchemy import Engine, select

from kerani.core.errors import BadInputError
from kerani.core.settings import ApiSettings
from kerani.people.api_tokens import webhook_secret
from kerani.records.completion import PREFECT_COMPLETED_EVENT, PREFECT_ROW
from kerani.storage import schema
from kerani.storage.database import utcnow

log = logging.getLogger(__name__)

FIRST_WAIT = timedelta(seconds=30)
LONGEST_WAIT = timedelta(hours=12)
# A claimed row is someone's for this long: if its sender dies, another takes it after.
CLAIM = timedelta(minutes=2)
SIGNATURE_HEADER = "Kerani-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The Kerani-Signature header value of a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, tolerance_s: int = 300) -> bool:
    """Whether a Kerani-Signature header is right for this body and recent (for receivers)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def _parts(url: str) -> tuple[SplitResult, int]:
    """The URL's parts and port; BadInputError naming the field when it is not a webhook's."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:  # a port out of range or not a number, a broken IPv6 host
        raise BadInputError(f"webhook_url: not a usable URL ({e})") from e
    if parts.scheme not in ("https", "http") or not parts.hostname or len(url) > 2000:
        raise BadInputError("webhook_url: give an http:// or https:// URL")
    if parts.username or parts.password:
        raise BadInputError("webhook_url: no user name or password in the URL")
    return parts, port


def check_webhook_url(url: str, allow_private: bool) -> str:
    """A webhook URL as stored: http(s), a host, and (unless allowed) no address on a
    loopback, private or link-local network."""
    url = url.strip()
    parts, port = _parts(url)
    if not allow_private:
        public_address(str(parts.hostname), port)
    return url


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _not_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    inner: ipaddress.IPv4Address | None = None
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 host (mapped, 6to4, NAT64).
        inner = address.ipv4_mapped or address.sixtofour
        if address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return not address.is_global or (inner is not None and not inner.is_global)


def public_address(host: str, port: int) -> str:
    """The one address the host resolves to that Kerani will connect to; BadInputError when
    any of its addresses is on a loopback, private or link-local network."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise BadInputError(f"webhook_url: the host {host!r} cannot be resolved") from e
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses or any(_not_public(a) for a in addresses):
        raise BadInputError(
            f"webhook_url: {host!r} is on a private, loopback or link-local network"
        )
    return str(addresses[0])


def _claim(db: Engine) -> Any:
    w = schema.webhook_deliveries
    now = utcnow()
    with db.begin() as conn:
        row = conn.execute(
            select(w)
            .where(w.c.delivered_at.is_(None), w.c.next_attempt_at <= now)
            .order_by(w.c.next_attempt_at)
            .limit(1)
        ).first()
        if row is None:
            return None
        taken = conn.execute(
            w.update()
            .where(w.c.id == row.id, w.c.next_attempt_at == row.next_attempt_at)
            .values(next_attempt_at=now + CLAIM)
        ).rowcount
    return row if taken else False


def _send_webhook(db: Engine, row: Any, api: ApiSettings) -> None:
    b = schema.batches
    with db.connect() as conn:
        batch = conn.execute(
            select(b.c.webhook_url, b.c.token_id).where(b.c.id == row.batch_id)
        ).one()
    url = check_webhook_url(str(batch.webhook_url), api.webhook_allow_private)
    secret = webhook_secret(db, int(batch.token_id)) if batch.token_id is not None else None
    body = str(row.body).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Kerani-Webhook/1",
        "Kerani-Event": str(row.event),
        "Kerani-Delivery": str(row.id),
    }
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, int(time.time()), body)
    parts, port = _parts(url)
    extensions: dict[str, Any] = {}
    if not api.webhook_allow_private:
        # Connect to the very address that was checked: resolved again by the client, a
        # host could answer a private one the second time (DNS rebinding). The host name
        # still goes in Host and in TLS's SNI, against which the certificate is checked.
        address = public_address(str(parts.hostname), port)
        netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        headers["Host"] = parts.netloc
        extensions["sni_hostname"] = parts.hostname
        url = urlunsplit(parts._replace(netloc=netloc))
    # No redirects: a 3xx must not take the notice, signed, somewhere else. The answer's
    # body is never read: a receiver cannot make Kerani hold megabytes.
    with (
        httpx.Client(
            timeout=api.webhook_timeout_s, follow_redirects=False, trust_env=False
        ) as client,
        client.stream("POST", url, content=body, headers=headers, extensions=extensions) as r,
    ):
        status = r.status_code
    if not 200 <= status < 300:
        raise ConnectionError(f"the receiver answered {status}")


def _send_prefect_event(row: Any) -> None:
    from kerani.flows.triggers import send_event

    payload = json.loads(row.body)
    resource = {
        "prefect.resource.id": f"kerani.batch.{row.batch_id}",
        "kerani.batch": str(row.batch_id),
    }
    send_event(PREFECT_COMPLETED_EVENT, resource, payload)


def prefect_in_use() -> bool:
    """Whether Kerani runs with a Prefect server that should hear of completed batches."""
    from kerani.flows.triggers import trigger_mode

    if trigger_mode() != "inline" or os.environ.get("PREFECT_API_URL"):
        return True
    # A server named in Prefect's own settings (a profile, or a test harness's).
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def deliver_due(db: Engine, api: ApiSettings, limit: int = 50) -> dict[str, int]:
    """Send the notices that are due; how many were delivered and how many failed."""
    w = schema.webhook_deliveries
    counts = {"delivered": 0, "failed": 0}
    for _ in range(limit):
        row = _claim(db)
        if row is None:
            break
        if row is False:
            continue  # another process took it
        error: str | None = None
        try:
            if row.event == PREFECT_ROW:
                _send_prefect_event(row)
            else:
                _send_webhook(db, row, api)
        except Exception as e:  # any failure: try again later, and say why
            error = f"{type(e).__name__}: {e}"[:500]
        attempts = int(row.attempts) + 1
        with db.begin() as conn:
            if error is None:
                conn.execute(
                    w.update()
                    .where(w.c.id == row.id)
                    .values(delivered_at=utcnow(), attempts=attempts, last_error=None)
                )
                counts["delivered"] += 1
                continue
            counts["failed"] += 1
            # Given up after the last attempt: it stays, undelivered, with its reason.
            wait = min(FIRST_WAIT * (2 ** min(attempts - 1, 20)), LONGEST_WAIT)
            later = utcnow() + (wait if attempts < api.webhook_attempts else timedelta(days=3650))
            conn.execute(
                w.update()
                .where(w.c.id == row.id)
                .values(attempts=attempts, last_error=error, next_attempt_at=later)
            )
        log.warning("notice %s of batch %s not delivered: %s", row.event, row.batch_id, error)
    return counts


class WebhookSender:
    """Delivers due notices every `poll_s` seconds in a daemon thread (held by the web app)."""

    def __init__(self, db: Engine, api: ApiSettings) -> None:
        self._db, self._api = db, api
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin delivering in the background."""
        self._thread = threading.Thread(target=self._loop, name="webhook-sender", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._api.webhook_poll_s):
            try:
                deliver_due(self._db, self._api)
            except Exception:  # the database away for a moment: the next round tries again
                log.exception("webhook delivery round failed")

    def stop(self) -> None:
        """Stop after the current round."""
        self._stop.set()
