"""`c360 sync run` as a user runs it, in its own process: the closing table accounts for every row read per
stream and is stored with the run, and a run killed with SIGKILL leaves no temporary Prefect server behind."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from sync.landing import LandingStats
from sync.simulator import CST
from tests.conftest import fetch_rows
from tests.sync.conftest import SINCE, SMALL, run, sim_get, simulator
from tests.sync.test_row_isolation import sale, write_csv

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTING = ("read", "landed", "quarantined", "rejected", "unchanged")


def cli_env(database_url: str, prefect_db: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("C360_", "PREFECT_"))}
    env.update(
        C360_DATABASE_URL=database_url,
        C360_DATA_DIR=str(tmp_path / "data"),
        C360_SYNC_POS_DROP_DIR=str(tmp_path / "pos_drop"),
        C360_SYNC_POS_FILE_STABLE_SECONDS="0",
        C360_SYNC_PREFECT_DATABASE_URL=prefect_db,
        C360_SYNC_INITIAL_LOOKBACK_DAYS=str((datetime.now(CST) - SINCE).days + 1),
        PREFECT_HOME=str(tmp_path / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        COLUMNS="120",
    )
    env.update(extra)
    return env


def table_rows(output: str) -> dict[str, tuple[int, ...]]:
    """The closing table's rows: stream -> (read, landed, quarantined, rejected, unchanged)."""
    rows: dict[str, tuple[int, ...]] = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if len(cells) == 6 and all(c.isdigit() for c in cells[1:]):
            rows[cells[0]] = tuple(int(c) for c in cells[1:])
    return rows


async def test_the_closing_table_accounts_for_every_row_and_is_stored_with_the_run(
    sim, clean_db, database_url, prefect_db, tmp_path
):
    drop = tmp_path / "pos_drop"
    good = [sale(f"T-OK-{n}") for n in range(4)]
    bad = [sale("T-NEG", total="-1.00"), sale("T-QTY", quantity="-2")]
    write_csv(drop / "a.csv", good + bad)
    (drop / "b.csv").write_bytes(b"\xff\xfe\xfd not an export")
    env = cli_env(database_url, prefect_db, tmp_path)

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "sync", "run", "--channel", "pos", "--base-url", sim, "--simulator"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "{'" not in out, "no raw Python dict"
    rows = table_rows(out)
    assert rows["pos.files"] == (7, 4, 2, 1, 0)
    for stream, (read, landed, quarantined, rejected, unchanged) in rows.items():
        assert read == landed + quarantined + rejected + unchanged, stream
    assert rows["pos.transactions"][1] > 0
    total = tuple(sum(r[i] for s, r in rows.items() if s != "all streams") for i in range(5))
    assert rows["all streams"] == total
    linked = await fetch_rows(clean_db, "select count(*) from source_identity where customer_id is not null")
    golden = await fetch_rows(clean_db, "select count(*) from golden_customer where status = 'active'")
    assert f"linked identities: {linked[0][0]} (0 still waiting)" in out
    assert f"golden customers: {golden[0][0]} " in out and golden[0][0] > 0
    assert "linking identities" in out

    # The same figures are stored, all under one run id.
    stored = await fetch_rows(
        clean_db,
        "select stream, run_id, rows_read, landed, quarantined, rejected, unchanged from sync_stream_run",
    )
    assert {s for s, *_ in stored} == {"pos.transactions", "pos.files"}
    assert len({run_id for _, run_id, *_ in stored}) == 1 and stored[0][1] is not None
    for stream, _, *figures in stored:
        assert tuple(figures) == rows[stream]


def _children(pid: int) -> list[int]:
    """Every process descended from `pid`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found += kids
        frontier += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _still_alive_after(pid: int, seconds: float) -> bool:
    """True while `pid` still runs after `seconds` (the kernel's signal is quick; this only bounds the wait)."""
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pid)


async def test_a_killed_run_leaves_no_prefect_server_behind(clean_db, database_url, prefect_db, tmp_path):
    from dataclasses import replace

    slow = replace(SMALL, page_delay_s=0.5)
    with simulator(slow) as base:
        env = cli_env(database_url, prefect_db, tmp_path)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.cli", "sync", "run", "--channel", "tmall", "--base-url", base, "--simulator",
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            server_pid, port = None, None
            while server_pid is None:
                assert proc.returncode is None, "the run ended before its server was seen"
                for child in _children(proc.pid):
                    cmd = _cmdline(child)
                    if "prefect.server.api.server:create_app" in cmd:
                        server_pid, port = child, cmd.split("--port ")[1].split()[0]
                await asyncio.sleep(0.2)
            # The server is up and the run is using it (a flow run exists), then the run is killed.
            async with httpx.AsyncClient() as client:
                while True:
                    try:
                        health = await client.get(f"http://127.0.0.1:{port}/api/health")
                        runs = await client.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={})
                        if health.status_code == 200 and runs.status_code == 200 and runs.json():
                            break
                    except httpx.HTTPError:
                        pass
                    assert proc.returncode is None
                    await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            assert not await asyncio.to_thread(_still_alive_after, server_pid, 30.0), (
                "the temporary Prefect server outlived its run"
            )
            async with httpx.AsyncClient() as client:
                try:
                    await client.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
                except httpx.HTTPError:
                    pass
                else:
                    raise AssertionError(f"something still answers on the server's port {port}")
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_failing_feed_never_puts_a_phone_or_a_card_number_in_the_output(
    sim, clean_db, database_url, prefect_db, tmp_path
):
    phone, card = "13912345678", "M77665544"
    drop = tmp_path / "pos_drop"
    write_csv(
        drop / "a.csv",
        [
            sale("T-P1", member_phone=phone, member_card_no=card, total="-1.00"),
            sale("T-P2", member_phone=phone, total="12.3O"),
            sale("T-P3", member_card_no=card * 20),
            sale("T-P4", member_phone=f"{phone}\x00", member_card_no=card, quantity="-1"),
        ],
    )
    write_csv(
        drop / "b.csv", [sale("T-P5", member_phone=phone, member_card_no=card, description="x" * 200_000)]
    )
    (drop / "c.csv").write_bytes(
        f"transaction_id,member_phone,member_card_no\nT-P6,{phone},{card}\n".encode() + b"\xff\xfe"
    )
    (drop / "d.jsonl").write_text(
        f'{{"member_phone": "{phone}", "member_card_no": "{card}", "total": \n', "utf-8"
    )
    env = cli_env(
        database_url, prefect_db, tmp_path,
        C360_LOG_LEVEL="DEBUG",
        PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL="DEBUG",
        PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL="DEBUG",
    )  # fmt: skip

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", "sync", "run", "--channel", "pos", "--base-url", sim, "--simulator"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    # The feed did fail row by row and file by file: held, rejected, and said so.
    assert rows["pos.files"][2] >= 4 and rows["pos.files"][3] >= 1, done.stdout
    held = await fetch_rows(clean_db, "select reason from quarantine where channel_code = 'pos'")
    everything = done.stdout + done.stderr + "\n".join(r[0] for r in held)
    for secret in (phone, card, "1391234", "M776655"):
        assert secret not in everything, secret
    # The sale that carried them is named by file, row or id and field instead.
    assert any("`total`" in r[0] for r in held) and any("c.csv" in r[0] for r in held)


async def test_progress_has_a_total_where_the_channel_counts_its_rows(sim, settings_for, clean_db):
    settings = settings_for(sim)
    seen: dict[str, list[tuple[int, int]]] = {}

    def progress(key: str, stats: LandingStats) -> None:
        seen.setdefault(key, []).append((stats.read, stats.expected))

    await run(clean_db, settings, "tmall", streams=("trades",), progress=progress)
    await run(clean_db, settings, "jd", progress=progress)
    await run(clean_db, settings, "wechat", streams=("followers",), progress=progress)
    feeds = (await sim_get(sim, "/_sim/stats"))["feeds"]
    for key, visible in (("tmall.trades", feeds["tmall"]["visible"]), ("jd.orders", feeds["jd"]["visible"])):
        updates = seen[key]
        assert len(updates) > 1, "several batches, each reporting"
        # Known before the rows arrive: the total is never below what was read, and ends at what the feed has.
        assert all(expected >= read for read, expected in updates), key
        assert updates[-1] == (visible, visible), key
    assert seen["wechat.followers"][-1][1] == seen["wechat.followers"][-1][0] > 0
