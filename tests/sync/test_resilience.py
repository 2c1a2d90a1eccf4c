"""Transient failures are retried (500, 429 with Retry-After, timeouts, platform busy codes, expired
WeChat tokens); caller faults are not; a crash anywhere followed by a rerun lands exactly what one clean
run lands."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from sync.connectors.base import PermanentError, SyncError
from tests.sync.conftest import run, sim_get, sim_post, simulator, snapshot, truncate_landed

FAULTS: dict[str, list[tuple[str, str, int, dict[str, Any]]]] = {
    # channel: faults armed before its run (path prefix, kind, count, extra)
    "tmall": [("/taobao", "500", 2, {}), ("/taobao", "platform_error", 2, {}),
              ("/taobao", "platform_error", 1, {"code": "15"})],
    "jd": [("/jd", "429", 2, {"retry_after": 1}), ("/jd", "platform_error", 2, {})],
    "app": [("/app/api/v1/orders", "timeout", 1, {"delay_s": 3}), ("/app", "500", 2, {})],
    "wechat": [("/wechat/cgi-bin/user/get", "platform_error", 1, {"code": "40001"}),
               ("/wechat/_sim/pushes", "platform_error", 2, {})],
    "weibo": [("/weibo", "platform_error", 2, {})],
    "pos": [("/pos", "429", 1, {"retry_after": 1}), ("/pos", "timeout", 1, {"delay_s": 3})],
}  # fmt: skip


@pytest.mark.parametrize("channel", list(FAULTS))
async def test_transient_failures_are_retried_to_the_same_result(channel, sim, settings_for, clean_db):
    settings = settings_for(sim, request_timeout_seconds=1.0)
    await run(clean_db, settings, channel)
    clean = await snapshot(clean_db)
    await truncate_landed(clean_db)

    for prefix, kind, n, extra in FAULTS[channel]:
        await sim_post(sim, "/_sim/faults", {"path_prefix": prefix, "kind": kind, "count": n, **extra})
    faulty = await run(clean_db, settings, channel)

    assert (await sim_get(sim, "/_sim/faults"))["faults"] == []  # every injected fault was met
    stats = faulty["_requests"]
    assert stats.retries >= sum(n for _, _, n, _ in FAULTS[channel])
    if any(kind == "timeout" for _, kind, _, _ in FAULTS[channel]):
        assert stats.causes.get("timeout", 0) >= 1
    if any(kind == "429" for _, kind, _, _ in FAULTS[channel]):
        assert stats.causes.get("429", 0) >= 1
    assert await snapshot(clean_db) == clean


async def test_caller_faults_are_not_retried(sim, settings_for, clean_db):
    settings = settings_for(sim)
    bad_secret = settings.model_copy(
        update={"tmall": settings.tmall.model_copy(update={"app_secret": "wrong"})}
    )
    with pytest.raises(PermanentError, match="25"):
        await run(clean_db, bad_secret, "tmall")
    bad_token = settings.model_copy(update={"app": settings.app.model_copy(update={"token": "nope"})})
    with pytest.raises(PermanentError, match="401"):
        await run(clean_db, bad_token, "app")
    expired = settings_for(sim)
    await sim_post(sim, "/_sim/faults", {"path_prefix": "/weibo", "kind": "platform_error", "count": 5,
                                         "code": "21327"})  # fmt: skip
    with pytest.raises(PermanentError, match="21327"):
        await run(clean_db, expired, "weibo")
    # One request each: none was retried.
    assert [f["remaining"] for f in (await sim_get(sim, "/_sim/faults"))["faults"]] == [4]


async def test_a_persistent_failure_gives_up_with_a_clear_error(sim, settings_for, clean_db):
    settings = settings_for(sim, max_retries=2)
    await sim_post(sim, "/_sim/faults", {"path_prefix": "/jd", "kind": "500", "count": 100})
    with pytest.raises(
        SyncError, match=r"jd: POST /jd/routerjson still failing after 2 retries \(last: http 500\)"
    ):
        await run(clean_db, settings, "jd")


def _small_pages(settings):
    """Pages of 25: enough requests for a crash to fall between them."""
    return settings.model_copy(
        update={
            c: getattr(settings, c).model_copy(update={"page_size": 25}) for c in ("app", "pos", "wechat")
        }
    )


def _rows(snap: dict) -> int:
    return sum(len(v) for k, v in snap.items() if k != "quarantine")


@pytest.mark.parametrize("channel", ["tmall", "app", "pos", "wechat"])
async def test_crash_mid_run_then_rerun_lands_exactly_one_clean_run(channel, settings_for, clean_db):
    # Reference: one clean run on a fresh simulator.
    with simulator() as base:
        await run(clean_db, _small_pages(settings_for(base, batch_size=50)), channel)
    reference = await snapshot(clean_db)

    # 1. The source starts failing for good after the first landed batch: the run dies mid-way.
    await truncate_landed(clean_db)
    with simulator() as base:
        settings = _small_pages(settings_for(base, batch_size=50))
        landed = asyncio.Event()

        async def arm() -> None:
            await landed.wait()
            await sim_post(base, "/_sim/faults", {"path_prefix": "/", "kind": "500", "count": 100_000})

        armer = asyncio.ensure_future(arm())
        with pytest.raises(SyncError):
            await run(clean_db, settings.model_copy(update={"max_retries": 1}), channel,
                      progress=lambda key, stats: landed.set())  # fmt: skip
        await armer
        partial = _rows(await snapshot(clean_db))
        assert 0 < partial < _rows(reference)
        async with httpx.AsyncClient() as client:
            await client.delete(base + "/_sim/faults")
        await run(clean_db, settings, channel)
    assert await snapshot(clean_db) == reference

    # 2. The worker is killed at arbitrary points (in HTTP, validation, or inside a landing transaction),
    # several times over, and then left to finish.
    await truncate_landed(clean_db)
    with simulator() as base:
        settings = _small_pages(settings_for(base, batch_size=50))
        for delay in (0.05, 0.2, 0.35, 0.5):
            task = asyncio.ensure_future(run(clean_db, settings, channel))
            await asyncio.sleep(delay)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await run(clean_db, settings, channel)
    assert await snapshot(clean_db) == reference
