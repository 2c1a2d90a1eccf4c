"""The embedded PostgreSQL: starts from the pip wheel, keeps its data, and a second start reuses the
running server instead of starting another."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from infra.embedded import start_embedded
from infra.settings import to_async_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the `pgserver` user that runs PostgreSQL (when we are root) can reach. Not under pytest's
    basetemp: pytest keeps /tmp/pytest-of-<user> at mode 0700 and resets it when another session starts."""
    path = Path(tempfile.mkdtemp(prefix="c360-embedded-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _version(url: str) -> str:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return str((await conn.execute(sa.text("show server_version"))).scalar_one())
    finally:
        await engine.dispose()


async def test_embedded_server_starts_and_a_second_start_reuses_it(shared_dir: Path) -> None:
    pgdata = shared_dir / "pgdata"
    server = await asyncio.to_thread(start_embedded, pgdata)
    try:
        pid = server.get_pid()
        assert (pgdata / "PG_VERSION").read_text().strip() == "16"
        assert (await _version(to_async_url(server.get_uri()))).startswith("16")

        # Another process (a second `c360` command) attaches to the running server.
        code = f"from pathlib import Path; from infra.embedded import start_embedded; print(start_embedded(Path({str(pgdata)!r})).get_pid())"
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert int(out.stdout.strip().splitlines()[-1]) == pid
        # ...and leaving does not stop it while we still hold it.
        assert psutil.pid_exists(pid)
    finally:
        server._cleanup()  # the last handle stops the server cleanly
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def _postmaster_pid(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    return int(pidfile.read_text().splitlines()[0]) if pidfile.exists() else None


def test_serve_on_embedded_defaults_stops_its_database_on_sigterm(shared_dir: Path) -> None:
    """`c360 serve` with no C360_DATABASE_URL brings up the API on an embedded server and, when
    stopped the way a process manager stops it, leaves no PostgreSQL behind."""
    import os
    import signal
    import time

    import httpx

    from tests.support import free_port

    data_dir = shared_dir / "serve-embedded"
    data_dir.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("C360_")}
    env.update(C360_DATA_DIR=str(data_dir), C360_PORT=str(port))
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve"], cwd=ROOT, env=env)
    from api.auth import issue_token
    from infra.settings import Settings

    token = issue_token(Settings(), "probe", "service")  # the server runs on the default (development) secret
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                reply = httpx.post(
                    f"http://127.0.0.1:{port}/graphql",
                    json={"query": "{ health { database serverVersion } }"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "c360 serve did not come up"
                time.sleep(0.3)
        assert reply.json()["data"]["health"]["serverVersion"].startswith("16")
        pid = _postmaster_pid(data_dir / "pgdata")
        assert pid is not None and psutil.pid_exists(pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
