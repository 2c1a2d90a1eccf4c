"""What `c360 sync serve` does on the server before serving: late runs collapsed into one catch-up run,
disabled channels' deployments removed, the heartbeat automation ensured once; and what it schedules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from sync.config import SyncSettings
from sync.prefect_setup import ServeError, check_api
from tests.sync.conftest import prefect_server


def test_scheduled_flows_follow_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from sync import schedules

    monkeypatch.setenv("C360_SYNC_JD__ENABLED", "false")
    monkeypatch.setenv("C360_SYNC_CATALOG_CRON", "5 * * * *")
    items = schedules.scheduled_flows(SyncSettings())
    # The CRM modules' flows follow the channel ones; this test is about the channels' settings.
    assert [(i.flow.name, i.cron) for i in items if i.flow.name.startswith("sync-")] == [
        ("sync-tmall", "*/10 * * * *"),
        ("sync-app", "*/5 * * * *"),
        ("sync-wechat", "*/5 * * * *"),
        ("sync-weibo", "*/30 * * * *"),
        ("sync-pos", "0 * * * *"),
        ("sync-catalog", "5 * * * *"),
    ]
    assert schedules.disabled_channels(SyncSettings()) == ["jd"]

    # A module in SCHEDULE_MODULES adds its flows; C360_SYNC_CRONS overrides their crons by flow name.
    monkeypatch.setattr(schedules, "SCHEDULE_MODULES", ("tests.sync.scheduled_module",))
    monkeypatch.setenv("C360_SYNC_CRONS", '{"nightly-recompute": "0 4 * * *"}')
    items = schedules.scheduled_flows(SyncSettings(), all_cron="0 2 * * *")
    assert [(i.flow.name, i.cron) for i in items][-2:] == [
        ("nightly-recompute", "0 4 * * *"),
        ("sync-all", "0 2 * * *"),
    ]

    monkeypatch.setenv("C360_SYNC_CRONS", '{"no-such-flow": "0 4 * * *"}')
    with pytest.raises(ServeError, match="C360_SYNC_CRONS names no scheduled flow: no-such-flow"):
        schedules.scheduled_flows(SyncSettings())


def test_a_bad_cron_names_its_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    from sync import schedules

    monkeypatch.setenv("C360_SYNC_WEIBO__CRON", "every minute")
    with pytest.raises(ServeError, match="weibo: bad cron 'every minute'"):
        schedules.deployments(schedules.scheduled_flows(SyncSettings()))


def test_an_unreachable_api_is_one_line_naming_it() -> None:
    with pytest.raises(ServeError, match=r"PREFECT_API_URL=http://127.0.0.1:9/api does not answer"):
        check_api("http://127.0.0.1:9/api", timeout=2)
    with pytest.raises(ServeError, match="PREFECT_API_URL is not set"):
        check_api(None)


async def test_prepare_collapses_late_runs_and_removes_disabled_channels(prefect_db: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from sync import schedules

    settings = SyncSettings()
    items = [i for i in schedules.scheduled_flows(settings) if i.key in ("tmall", "jd")]
    said: list[str] = []
    async with prefect_server(prefect_db):
        async with get_client() as client:
            ids = {}
            # deployments() is what the (synchronous) CLI calls; in a loop, to_deployment is a coroutine.
            built = await asyncio.to_thread(schedules.deployments, items)
            for item, deployment in zip(items, built, strict=True):
                ids[item.key] = await deployment.apply()
            now = datetime.now(UTC)
            # Three runs due while serve was down, one still in the future.
            for minutes in (-30, -20, -10, 10):
                await client.create_flow_run_from_deployment(
                    ids["tmall"], state=Scheduled(scheduled_time=now + timedelta(minutes=minutes))
                )
            tmall_only = [i for i in items if i.key == "tmall"]
            await schedules.prepare_server(
                client, tmall_only, ["jd"], said.append, timedelta(seconds=90), now=now
            )
            await schedules.prepare_server(
                client, tmall_only, ["jd"], said.append, timedelta(seconds=90), now=now
            )

            runs = await client.read_flow_runs()
            by_state: dict[str, list[datetime]] = {}
            for run in runs:
                assert run.state is not None and run.expected_start_time is not None
                by_state.setdefault(run.state.type.value, []).append(run.expected_start_time)
            automations = await client.read_automations_by_name(schedules.ZOMBIE_AUTOMATION)
            deployments = {d.name for d in await client.read_deployments()}

    # The newest late run is the catch-up run; the older two are cancelled; the future one is untouched.
    assert sorted(by_state["SCHEDULED"]) == sorted([now - timedelta(minutes=10), now + timedelta(minutes=10)])
    assert sorted(by_state["CANCELLED"]) == [now - timedelta(minutes=30), now - timedelta(minutes=20)]
    assert "sync-tmall/tmall-scheduled: 2 late runs collapsed into one catch-up run" in said
    assert "removed deployment sync-jd/jd-scheduled: the channel is disabled" in said
    assert deployments == {"tmall-scheduled"}
    assert len(automations) == 1 and automations[0].trigger.within == timedelta(seconds=90)  # type: ignore[union-attr]


def test_serve_with_a_wrong_api_url_fails_in_one_line_before_registering(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("C360_", "PREFECT_"))}
    env.update(PREFECT_API_URL="http://127.0.0.1:9/api", PREFECT_HOME=str(tmp_path))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "c360"), "sync", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: PREFECT_API_URL=http://127.0.0.1:9/api does not answer (ConnectError: [Errno 111] Connection refused)"
    ]
    assert "scheduled" not in done.stdout
