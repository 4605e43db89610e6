"""Run the review app with uvicorn in a background thread (for the demo and real-server tests)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI

from kerani.core.settings import ReviewSettings


def uvicorn_options(review: ReviewSettings) -> dict[str, Any]:
    """How uvicorn serves the app, wherever Kerani starts it (`kerani serve`, tests, demo).

    X-Forwarded-For is believed only from the proxies `review.trusted_proxies` names:
    uvicorn's own default trusts 127.0.0.1, so anyone reaching the app from the same host
    (or through a proxy that passes the header on) could pick the address the sign-in
    throttle counts against. No Server header: it only tells an attacker what to try.
    The Date header stays, as HTTP/1.1 asks of a server with a clock.
    """
    trusted = review.trusted_proxies.strip()
    return {
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or None,
        "server_header": False,
        "date_header": True,
    }


def port_is_free(host: str, port: int) -> bool:
    """Say whether nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex((host, port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class BackgroundServer:
    """A uvicorn server on a daemon thread; `stop()` shuts it down cleanly."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self.host, self.port = host, port
        options = uvicorn_options(app.state.settings.review)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> BackgroundServer:
        """Start serving and wait until the socket accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the review server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
