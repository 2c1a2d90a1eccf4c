"""Prefect's environment, set before Prefect is imported: a project-local home, no analytics, and its
own database on our PostgreSQL server (SQLite's 'database is locked' under concurrent flows otherwise),
when that server has the pg_trgm extension Prefect's schema needs; the embedded server does not, so
there Prefect keeps its SQLite file in the project-local PREFECT_HOME.

Nothing here runs when PREFECT_API_URL points at a real Prefect server: that server owns its database.
"""

from __future__ import annotations

import asyncio
import logging
import os

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from infra.db import resolve_database_url
from infra.settings import Settings, mask_url
from sync.config import SyncSettings

log = logging.getLogger(__name__)

PREFECT_DATABASE = "c360_prefect"
_DB_VARS = ("PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL")


def _dsn(url: str, database: str) -> str:
    return make_url(url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


async def ensure_database(url: str) -> bool:
    """Create the database of `url` on its server if it does not exist yet. False when the server lacks
    the pg_trgm extension Prefect's schema needs (the embedded pgserver build ships without it)."""
    name = make_url(url).database
    admin = await asyncpg.connect(_dsn(url, "postgres"))
    try:
        if not await admin.fetchval("select 1 from pg_available_extensions where name = 'pg_trgm'"):
            return False
        exists = await admin.fetchval("select 1 from pg_database where datname = $1", name)
        if not exists:
            try:
                await admin.execute(f'create database "{name}"')
            except asyncpg.DuplicateDatabaseError:
                pass
    finally:
        await admin.close()
    return True


def configure_prefect(settings: Settings, sync_settings: SyncSettings, run_logs: bool = False) -> None:
    """Point Prefect at project-local state; call before the first `import prefect`. `run_logs`: each
    run's figures at INFO (for `serve`; `sync run` and `demo` show a progress bar instead)."""
    os.environ.setdefault("PREFECT_HOME", str(settings.data_dir / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Under serve, flow and task run logs (what landed, was quarantined, was linked) at INFO, while the
    # rest of Prefect stays at WARNING: the UI and serve's output show each run's figures.
    if run_logs:
        for logger in ("FLOW_RUNS", "TASK_RUNS"):
            os.environ.setdefault(f"PREFECT_LOGGING_LOGGERS_PREFECT_{logger}_LEVEL", "INFO")
    # The ephemeral API server migrates its database on first start, which takes ~30 s on a new
    # machine; Prefect's default 20 s start-up timeout would fail exactly the first `c360 demo`.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if os.environ.get("PREFECT_API_URL") or any(os.environ.get(v) for v in _DB_VARS):
        return
    url = sync_settings.prefect_database_url
    if url is None:
        base = resolve_database_url(settings)
        url = make_url(base).set(database=PREFECT_DATABASE).render_as_string(hide_password=False)
        if not asyncio.run(ensure_database(url)):
            # Prefect keeps its default SQLite file under PREFECT_HOME; one process at a time is fine.
            log.info("PostgreSQL at %s has no pg_trgm; Prefect keeps its state in SQLite", mask_url(base))
            return
    os.environ["PREFECT_API_DATABASE_CONNECTION_URL"] = url


class ServeError(RuntimeError):
    """`c360 sync serve` cannot start; the message is one line naming the cause."""


def check_api(api_url: str | None, timeout: float = 5.0) -> str:
    """The Prefect API URL, proven to answer; a ServeError naming it otherwise, before anything registers."""
    if not api_url:
        raise ServeError(
            "PREFECT_API_URL is not set: schedules need a running Prefect server. Start one with "
            "`prefect server start` and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        response = httpx.get(api_url.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise ServeError(f"PREFECT_API_URL={api_url} does not answer ({type(exc).__name__}: {exc})") from exc
    if response.status_code != 200:
        raise ServeError(
            f"PREFECT_API_URL={api_url} is not a Prefect API: GET /health answered HTTP {response.status_code}"
        )
    return api_url


def _die_with_parent() -> None:
    """In the server's child process, before exec: the kernel kills it when the process that started it dies,
    SIGKILL included, so a killed `c360 sync run` leaves no server holding its port and connections."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL))


def start_temporary_server() -> str | None:
    """Start the temporary Prefect server `sync run` and `demo` use when PREFECT_API_URL is unset, tied to this
    process's life (Linux); returns its API URL, or None when a real server is configured.

    Prefect starts the same server lazily from whichever thread first needs a client, and PR_SET_PDEATHSIG fires
    when the starting thread ends: started here, from the main thread, it lives exactly as long as the process.
    Prefect's own clients find it (one instance per process) and reuse it.
    """
    import subprocess
    import sys

    if os.environ.get("PREFECT_API_URL"):
        return None
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class ChildServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[bytes]:
            # Prefect's own command (3.x), with the parent-death signal set in the child.
            server_env = {
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            }
            settings_env = get_current_settings().to_environment_variables(exclude_unset=True)
            return subprocess.Popen(
                args=[
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    str(prefect.__module_path__.parent),
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],  # fmt: skip
                env={**os.environ, **server_env, **settings_env},
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    server = ChildServer()
    server.start()
    return server.api_url
