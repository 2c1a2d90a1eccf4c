"""The embedded PostgreSQL (pgserver) used when `C360_DATABASE_URL` is unset.

pgserver runs a real PostgreSQL 16 from its wheel on a unix socket. Its data lives in a project-local
folder and is reused across runs; the server stops when the last process that asked for it exits.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from infra.settings import to_async_url

log = logging.getLogger(__name__)


class EmbeddedDatabaseError(RuntimeError):
    """The embedded server could not be started; the message says why and what to do."""


def start_embedded(pgdata: Path) -> Any:
    """Start (or attach to the already running) embedded server for `pgdata` and return its handle."""
    # pgserver puts its lock under XDG_RUNTIME_DIR and warns when it is unset; a stable default is enough.
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, parents=True, exist_ok=True)
    pgdata.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver.postgres_server import PostgresServer

            with PostgresServer._lock:
                _forget_dead_handles(pgdata)
            return pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:
        raise EmbeddedDatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata} ({type(exc).__name__}: {exc}). "
            "Check the log in that folder, or set C360_DATABASE_URL to use an external server."
        ) from exc


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops the server when the last process holding it exits, but a process that was
    killed never says goodbye; without this, one kill -9 would keep the server running forever."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    import psutil

    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def embedded_url(pgdata: Path, database: str = "postgres") -> str:
    """An asyncpg URL for a database on the embedded server, starting the server if needed."""
    server = start_embedded(pgdata)
    return to_async_url(str(server.get_uri(database=database)))
