"""Limits an anonymous visitor meets: request bodies bounded before they are read (declared or
streamed, on a real server), overlong typed fields refused with one line, the API's
description kept for staff, and the security headers (no server banner)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from kerani.core.settings import Settings
from kerani.people.workers import add_person
from kerani.review_ui.app import create_app
from kerani.review_ui.limits import BodyLimit
from kerani.review_ui.server import BackgroundServer, free_port
from kerani.storage.stores import Stores
from tests.factories import form_token, seed_page, sign_in_with_code

LIMIT = 256 * 1024  # review.max_body_bytes by default


@pytest.fixture
def client(settings: Settings, stores: Stores) -> TestClient:
    return TestClient(create_app(settings, stores), follow_redirects=False)


@pytest.fixture
def server(settings: Settings, stores: Stores) -> Iterator[BackgroundServer]:
    running = BackgroundServer(create_app(settings, stores), "127.0.0.1", free_port()).start()
    yield running
    running.stop()


def raw_exchange(server: BackgroundServer, *pieces: bytes) -> bytes:
    """Send `pieces` on one connection (no more), then read until the server closes it.

    A server that waits for the rest of a body never answers: the read times out and the
    test fails.
    """
    with socket.create_connection((server.host, server.port), timeout=10) as conn:
        for piece in pieces:
            conn.sendall(piece)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    return reply


def head(server: BackgroundServer, length_header: bytes) -> bytes:
    return (
        b"POST /signin HTTP/1.1\r\nHost: " + f"{server.host}:{server.port}".encode() + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n" + length_header + b"\r\n\r\n"
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_declared_big_body_is_refused_before_it_is_read(server: BackgroundServer) -> None:
    # 100 MiB announced, 1 KiB sent: the answer comes without waiting for the rest.
    reply = raw_exchange(server, head(server, b"Content-Length: 104857600") + b"n=" * 512)
    status, _, rest = reply.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert f"larger than {LIMIT} bytes".encode() in rest
    assert b"content-security-policy:" in rest.lower()  # refused inside the security headers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_streamed_body_is_refused_once_over_the_limit(server: BackgroundServer) -> None:
    piece = b"n=" + b"1" * (16 * 1024 - 2)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # Chunked, no length said: counted as it comes; just over the limit, and not ended.
    over = LIMIT // len(piece) + 1
    reply = raw_exchange(server, head(server, b"Transfer-Encoding: chunked"), *[chunk] * over)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"larger than" in reply


def test_a_small_body_passes_and_an_upload_prefix_can_take_more() -> None:
    async def size(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    inner = Starlette(routes=[Route("/{path:path}", size, methods=["POST"])])
    app = BodyLimit(inner, max_bytes=1024, by_prefix={"/uploads": 4096})
    client = TestClient(app)
    assert client.post("/signin", content=b"x" * 1024).text == "1024"
    assert client.post("/signin", content=b"x" * 1025).status_code == 413
    assert client.post("/uploads/scan", content=b"x" * 4096).text == "4096"
    assert client.post("/uploads/scan", content=b"x" * 4097).status_code == 413

    def streamed(n: int) -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield from [b"x" * 512] * (n // 512)

    assert client.post("/signin", content=streamed(1024)).text == "1024"
    assert client.post("/signin", content=streamed(1536)).status_code == 413


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("route", "form", "field"),
    [
        ("/signin", {"number": "1" * 21, "pin": "402917"}, "Worker number"),
        ("/signin", {"number": "1", "pin": "4" * 33}, "PIN (6 digits)"),
        ("/signin/code", {"code": "c" * 101}, "Access code"),
        ("/join", {"invite": "A" * 41, "pin": "402917", "pin_again": "402917"}, "Invite code"),
        ("/join", {"invite": "ABCD-EFGH", "pin": "4" * 33, "pin_again": "4"}, "Choose a PIN"),
    ],
)
def test_overlong_sign_in_fields_are_refused_with_one_line(
    client: TestClient, route: str, form: dict[str, str], field: str
) -> None:
    response = client.post(route, data=form | {"csrf": form_token(client)})
    assert response.status_code == 400
    assert f"{field}" in response.text and "too long, at most" in response.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_overlong_answer_is_refused_with_a_reason(client: TestClient, stores: Stores) -> None:
    seed_page(stores, [("postcode", "postcode", "4O100", 40.0)])
    auth = {"Authorization": f"Bearer {add_person(stores.db, 'ana', 'worker', practised=True)}"}
    task = client.post("/api/tasks/claim", headers=auth).json()
    answer: dict[str, Any] = {"value": "4" * 2001, "idempotency_key": "k1"}
    refused = client.post(f"/api/tasks/{task['task_id']}/answer", headers=auth, json=answer)
    assert refused.status_code == 400
    assert refused.json() == {"error": "answer is longer than 2000 characters"}


def test_the_api_description_is_for_staff_only(client: TestClient, stores: Stores) -> None:
    operator = add_person(stores.db, "opi", "operator")
    agency = add_person(stores.db, "jkm", "agency")
    worker = add_person(stores.db, "ana", "worker", practised=True)
    assert client.get("/api/openapi.json").status_code == 401
    as_worker = client.get("/api/openapi.json", headers={"Authorization": f"Bearer {worker}"})
    assert as_worker.status_code == 403
    by_code = client.get("/api/openapi.json", headers={"Authorization": f"Bearer {operator}"})
    assert by_code.status_code == 200 and "/api/tasks/claim" in by_code.json()["paths"]
    assert sign_in_with_code(client, agency).status_code == 303
    assert client.get("/api/openapi.json").status_code == 200  # by session


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_security_headers(settings: Settings, stores: Stores) -> None:
    page = TestClient(create_app(settings, stores)).get("/signin")
    policy = page.headers["permissions-policy"]
    assert all(f"{feature}=()" in policy for feature in ("camera", "microphone", "geolocation"))
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    # Over plain HTTP (secure cookies off) no HSTS: it would lock a LAN install out.
    assert "strict-transport-security" not in page.headers
    settings.review.secure_cookies = True
    secure = TestClient(create_app(settings, stores), base_url="https://kerani.test")
    hsts = secure.get("/signin").headers["strict-transport-security"]
    assert hsts == "max-age=31536000"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_real_server_names_no_software(server: BackgroundServer) -> None:
    reply = raw_exchange(
        server,
        f"GET /signin HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n\r\n".encode(),
    )
    headers = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert headers.startswith(b"http/1.1 200 ")
    assert b"\r\nserver:" not in headers and b"uvicorn" not in headers
    assert b"\r\ndate:" in headers
