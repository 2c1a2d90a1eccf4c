"""`c360 sync serve` on a real `prefect server start`: the server's scheduler creates the runs, they
complete and land rows, their figures reach the server's logs, and stopping `serve` (SIGTERM, then a
restart, then SIGKILL) leaves no run Running and no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from sync.simulator import CST
from tests.conftest import fetch_rows
from tests.support import free_port
from tests.sync.conftest import SINCE, simulator

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("C360_", "PREFECT_"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`prefect server start` on a free loopback port, with a home (and SQLite database) of its own."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=_clean_env(PREFECT_HOME=str(home)),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            return httpx.get(api + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for("the Prefect server to answer", healthy, timeout=180)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def flow_runs(api: str, flow: str, states: list[str] | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"flows": {"name": {"any_": [flow]}}, "sort": "EXPECTED_START_TIME_DESC"}
    if states:
        body["flow_runs"] = {"state": {"type": {"any_": states}}}
    response = httpx.post(api + "/flow_runs/filter", json=body, timeout=10)
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()
    return runs


def heartbeats(api: str, flow_run_id: str) -> int:
    """How many heartbeat events of this flow run the server has received."""
    body = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 10,
    }
    response = httpx.post(api + "/events/filter", json=body, timeout=10)
    response.raise_for_status()
    return len(response.json()["events"])


def run_logs(api: str, flow_run_id: str) -> list[str]:
    body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
    response = httpx.post(api + "/logs/filter", json=body, timeout=10)
    response.raise_for_status()
    return [entry["message"] for entry in response.json()]


def logged(api: str, flow_run_id: str, line: str, timeout: float = 30) -> bool:
    """Whether the run logged a line starting with `line` (a regex). The run's logs reach the server in
    batches, after its state: a run just seen COMPLETED may not have shipped its last lines yet."""

    def seen() -> bool:
        return any(re.match(line, m) for m in run_logs(api, flow_run_id))

    try:
        return bool(wait_for(f"run {flow_run_id} to log {line!r}", seen, timeout))
    except AssertionError:
        return False


class Serve:
    """`c360 sync serve` as an operator starts it, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [str(BIN / "c360"), "sync", "serve"],
            env=env,
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text()

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


# Each CRM flow's summary line in the server's logs: the run did its work, not just ended.
CRM_FLOW_LINES = {
    "loyalty-daily": r"loyalty: ",
    "analytics-daily": r"analytics: [1-9]\d* customers measured",
    "service-sla-check": r"service: ",
    "care-daily": r"care: actions written ",
    "survey-invitations": r"surveys: \d+ invitations written",
}


def test_serve_on_a_real_prefect_server(
    prefect_api: str, committed_db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    with simulator() as sim:
        env = _clean_env(
            PREFECT_API_URL=prefect_api,
            PREFECT_HOME=str(tmp_path / "prefect-client"),
            C360_DATABASE_URL=database_url,
            C360_SYNC_WEIBO__BASE_URL=sim,
            C360_SYNC_WEIBO__CRON="* * * * *",
            C360_SYNC_CATALOG_URL=sim,
            C360_SYNC_CATALOG_CRON="* * * * *",
            C360_SYNC_SOURCE_CLOCK_URL=sim + "/_sim/clock",
            C360_SYNC_INITIAL_LOOKBACK_DAYS=str((datetime.now(CST) - SINCE).days + 1),
            # Long enough for the slow page armed below to hold a run open.
            C360_SYNC_REQUEST_TIMEOUT_SECONDS="120",
            C360_SYNC_HEARTBEAT_GRACE_SECONDS="60",
            **{f"C360_SYNC_{code}__ENABLED": "false" for code in ("TMALL", "JD", "APP", "WECHAT", "POS")},
        )
        # The CRM flows serve registers beside the channels, every minute for this first start.
        crm_env = {**env, "C360_SYNC_CRONS": json.dumps(dict.fromkeys(CRM_FLOW_LINES, "* * * * *"))}
        log = tmp_path / "serve.log"
        serve = Serve(crm_env, log)
        try:
            # 1. A run the server scheduled (not one triggered by hand) completes and lands rows.
            done = wait_for(
                "a scheduled sync-weibo run to complete",
                lambda: flow_runs(prefect_api, "sync-weibo", ["COMPLETED"]),
                timeout=180,
            )[0]
            assert done["auto_scheduled"] is True
            wait_for(
                "a scheduled catalogue run",
                lambda: flow_runs(prefect_api, "sync-catalog", ["COMPLETED"]),
                120,
            )
            assert "scheduled sync-weibo on '* * * * *'" in serve.output()
            assert "sync-tmall" not in serve.output()
            [(weibo_rows,)] = fetch_rows_sync(
                committed_db, "select count(*) from interaction where channel_code = 'weibo'"
            )
            assert weibo_rows > 0
            [(products,)] = fetch_rows_sync(committed_db, "select count(*) from product")
            assert products > 0
            # 2. Its figures are in the server's logs (the UI) and in serve's output, one line per run.
            assert logged(prefect_api, done["id"], "sync-weibo: landed")
            assert "sync-weibo: landed" in serve.output()

            # 2b. Each CRM flow is registered, scheduled by the server and does its work. A run in the
            # first minute may start before the channel landed anyone: any scheduled run of the flow that
            # did its work counts (they come every minute).
            for flow_name, line in CRM_FLOW_LINES.items():

                def worked(name: str = flow_name, pattern: str = line) -> list[dict[str, Any]]:
                    return [
                        r
                        for r in flow_runs(prefect_api, name, ["COMPLETED"])
                        if any(re.match(pattern, m) for m in run_logs(prefect_api, r["id"]))
                    ]

                run = wait_for(
                    f"a scheduled {flow_name} run that did its work", worked, timeout=240, every=5
                )[0]
                assert run["auto_scheduled"] is True
                assert f"scheduled {flow_name} on '* * * * *'" in serve.output()
            [(measured,)] = fetch_rows_sync(committed_db, "select count(*) from customer_metrics")
            assert measured > 0
            [(members,)] = fetch_rows_sync(committed_db, "select count(*) from membership")
            assert members > 0

            # 3. SIGTERM while a run is in flight: nothing is left Running, no process outlives serve.
            httpx.post(
                sim + "/_sim/faults",
                json={"path_prefix": "/weibo", "kind": "timeout", "count": 1, "delay_s": 40},
            )
            wait_for(
                "a sync-weibo run in flight", lambda: flow_runs(prefect_api, "sync-weibo", ["RUNNING"]), 120
            )
            children = serve.descendants()
            assert children, "the run should be a child process of serve"
            serve.proc.send_signal(signal.SIGTERM)
            serve.proc.wait(timeout=90)
            wait_for("serve's children to exit", lambda: not alive(children), 30)
            wait_for(
                "no run left Running or Pending",
                lambda: not flow_runs(prefect_api, "sync-weibo", ["RUNNING", "PENDING"]),
                30,
            )

            # 4. A restart serves again (nothing stays paused) and completes a new scheduled run.
            completed_before = len(flow_runs(prefect_api, "sync-weibo", ["COMPLETED"]))
            serve = Serve(env, log)
            wait_for(
                "a scheduled run after the restart",
                lambda: len(flow_runs(prefect_api, "sync-weibo", ["COMPLETED"])) > completed_before,
                150,
            )

            # 5. The machine dies while a run is in flight: serve and the flow run's process stop at once,
            # so nobody can report the run's end. It does not stay Running forever: its heartbeats stop
            # and the server marks it Crashed. (A SIGKILL of serve alone is not this case: the child
            # gets SIGTERM and its engine reports Crashed itself.) SIGSTOP first freezes the child, so it
            # cannot run that handler between the two kills.
            httpx.post(
                sim + "/_sim/faults",
                json={"path_prefix": "/weibo", "kind": "timeout", "count": 1, "delay_s": 40},
            )
            running = wait_for(
                "a run in flight", lambda: flow_runs(prefect_api, "sync-weibo", ["RUNNING"]), 120
            )[0]
            # The server only watches a run for silence once it has seen a heartbeat from it; the child
            # emits its first at start, but sends events in the background, so wait until one arrived.
            wait_for("the run's first heartbeat", lambda: heartbeats(prefect_api, running["id"]), 35)
            children = serve.descendants()
            assert children, "the run should be a child process of serve"
            for child in children:
                child.send_signal(signal.SIGSTOP)
            os.kill(serve.proc.pid, signal.SIGKILL)
            serve.proc.wait(timeout=10)
            for child in alive(children):
                child.kill()
            wait_for("the flow run's process to die", lambda: not alive(children), 30)
            crashed = wait_for(
                "the orphaned run to be marked Crashed",
                lambda: [
                    r for r in flow_runs(prefect_api, "sync-weibo", ["CRASHED"]) if r["id"] == running["id"]
                ],
                240,
                every=5,
            )
            assert "heartbeat" in crashed[0]["state"]["message"]
        finally:
            serve.stop()
            httpx.delete(sim + "/_sim/faults")


def fetch_rows_sync(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    """fetch_rows from a sync test (the waits above block, so the test itself is not async)."""
    import asyncio

    return asyncio.run(_fresh_fetch(str(engine.url.render_as_string(hide_password=False)), sql))


async def _fresh_fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(url, poolclass=NullPool)
    try:
        return await fetch_rows(engine, sql)
    finally:
        await engine.dispose()


async def _seed_service(url: str) -> dict[str, int]:
    """A complaint past its first-response deadline, one closed four days ago, and a customer born today."""
    from zoneinfo import ZoneInfo

    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo("Asia/Shanghai")).date()
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:

            async def one(sql: str, **params: Any) -> int:
                return int((await conn.execute(sa.text(sql), params)).scalar_one())

            customer = "insert into golden_customer (status, name, phone, birth_date) values ('active', :n, :p, :b) returning id"  # fmt: skip
            waiting = await one(customer, n="等", p="+8613800000201", b=None)
            served = await one(customer, n="结", p="+8613800000202", b=None)
            born = await one(customer, n="生", p="+8613800000203", b=today.replace(year=1992))
            case = (
                "insert into service_case (case_no, customer_id, type, status, priority, subject, opened_at,"
                " first_response_due_at, resolve_due_at, sla_due_at, first_response_at, resolved_at, closed_at,"
                " outcome) values (:no, :c, 'complaint', :s, 'normal', 'serve test', cast(:o as timestamptz),"
                " cast(:o as timestamptz) + interval '24 hours',"
                " cast(:o as timestamptz) + interval '72 hours', :due, :r, :closed, :closed, :outcome) returning id"
            )
            late = await one(case, no="CS-late", c=waiting, s="recorded", o=now - timedelta(hours=30),
                             due=now + timedelta(hours=42), r=None, closed=None, outcome=None)  # fmt: skip
            closed = await one(case, no="CS-closed", c=served, s="closed", o=now - timedelta(days=5),
                               due=None, r=now - timedelta(days=5), closed=now - timedelta(days=4),
                               outcome="resolved")  # fmt: skip
        return {"late": late, "closed": closed, "served": served, "born": born}
    finally:
        await engine.dispose()


def deployment(api: str, name: str) -> dict[str, Any] | None:
    response = httpx.post(
        api + "/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}, timeout=10
    )
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found[0] if found else None


def run_now(api: str, deployment_id: str) -> dict[str, Any]:
    """A run of the deployment created now, as the UI's "Quick run" does; serve's runner picks it up. A run
    that meets one the schedule started is cancelled (one at a time per deployment): then ask again."""
    for _ in range(3):
        # A busy server (its SQLite locked by the scheduler) answers 503: ask again, as the UI does.
        def create(d: str = deployment_id) -> httpx.Response | None:
            reply = httpx.post(f"{api}/deployments/{d}/create_flow_run", json={}, timeout=10)
            return None if reply.status_code == 503 else reply

        created = wait_for("the server to take the run", create, 60)
        created.raise_for_status()
        run_id = created.json()["id"]

        def final(run_id: str = run_id) -> dict[str, Any] | None:
            run: dict[str, Any] = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
            state = (run.get("state") or {}).get("type")
            return run if state in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        run = wait_for("the run to finish", final, timeout=240)
        if run["state"]["type"] != "CANCELLED":
            assert run["state"]["type"] == "COMPLETED", run["state"]
            return run
    raise AssertionError("every run was cancelled")


def test_serve_schedules_service_and_care_flows(
    prefect_api: str, committed_db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """serve registers the SLA check, the daily care run and the survey invitations on their crons; a run
    of each, picked up by serve, flags the breach, writes the invitation, and writes the care actions."""
    import asyncio

    from crm.care.flows import SCHEDULES as CARE
    from crm.service.flows import SCHEDULES as SERVICE

    seeded = asyncio.run(_seed_service(database_url))
    env = _clean_env(
        PREFECT_API_URL=prefect_api,
        PREFECT_HOME=str(tmp_path / "prefect-client"),
        C360_DATABASE_URL=database_url,
        C360_SYNC_CATALOG_CRON="",
        **{
            f"C360_SYNC_{code}__ENABLED": "false" for code in ("TMALL", "JD", "APP", "WECHAT", "WEIBO", "POS")
        },
    )
    crons = {flow.name: cron for flow, cron in (*SERVICE, *CARE)}
    assert set(crons) == {"service-sla-check", "care-daily", "survey-invitations"}
    serve = Serve(env, tmp_path / "serve.log")
    try:
        ids: dict[str, str] = {}
        for name, cron in crons.items():
            # An earlier serve on this server may have registered it on another cron: wait for this one's.
            def registered(n: str = name, c: str = cron) -> dict[str, Any] | None:
                found = deployment(prefect_api, f"{n}-scheduled")
                ok = found is not None and [s["schedule"]["cron"] for s in found["schedules"]] == [c]
                return found if ok else None

            found = wait_for(f"the {name} deployment on its cron", registered, 180)
            assert found["schedules"][0]["schedule"]["timezone"] == "Asia/Shanghai"
            ids[name] = found["id"]
        wait_for("serve to list what it scheduled", lambda: "survey-invitations on" in serve.output(), 60)
        for name, cron in crons.items():
            assert f"scheduled {name} on '{cron}'" in serve.output()

        def rows(sql: str) -> list[tuple[Any, ...]]:
            return fetch_rows_sync(committed_db, sql)

        sla = run_now(prefect_api, ids["service-sla-check"])
        assert logged(prefect_api, sla["id"], ".*SLA breaches flagged")
        assert rows(
            f"select first_response_breached_at = first_response_due_at from service_case where id = {seeded['late']}"  # noqa: S608 - the test's own ids
        ) == [(True,)]
        assert rows(
            f"select count(*) from case_event where case_id = {seeded['late']} and kind = 'sla_breached'"  # noqa: S608
        ) == [(1,)]

        invites = run_now(prefect_api, ids["survey-invitations"])
        assert logged(prefect_api, invites["id"], CRM_FLOW_LINES["survey-invitations"])
        assert rows(
            f"select state, payload->>'survey' from care_action where customer_id = {seeded['served']}"  # noqa: S608
            " and kind = 'survey_invite'"
        ) == [("pending", "case-csat")]

        care = run_now(prefect_api, ids["care-daily"])
        assert logged(prefect_api, care["id"], CRM_FLOW_LINES["care-daily"])
        assert rows(
            f"select state, suppressed_reason from care_action where customer_id = {seeded['served']}"  # noqa: S608
            " and kind = 'case_followup'"
        ) == [("pending", None)]
        assert rows(
            f"select state, suppressed_reason from care_action where customer_id = {seeded['born']}"  # noqa: S608
            " and kind = 'birthday'"
        ) == [("suppressed", "no_marketing_consent:marketing_wechat")]
        # Run again: nothing new (once per customer, kind and period).
        before = rows("select count(*) from care_action")
        run_now(prefect_api, ids["care-daily"])
        assert rows("select count(*) from care_action") == before
        serve.proc.send_signal(signal.SIGTERM)
        serve.proc.wait(timeout=90)
    finally:
        serve.stop()
