"""Small helpers shared by tests: a real uvicorn server on loopback, and free ports."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: Any, ready_path: str = "/") -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread; yield its base URL; stop it after."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on {base} did not start")
        time.sleep(0.05)
    try:
        httpx.get(base + ready_path, timeout=5)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)
