"""Prefect flows: one per channel, and `sync_all` running them concurrently, then linking the touched
identities and recomputing the touched customers.

Tasks are idempotent (a retry resumes from the committed watermark), so they retry freely. Flow and
task run names say which channel and stream they pull, so the Prefect UI shows progress per stream.
Import this module only after `sync.prefect_setup.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa
from prefect import Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from infra.db import get_engine
from sync.config import CHANNEL_CODES, SyncSettings, get_sync_settings
from sync.connectors.base import PermanentError
from sync.connectors.registry import make_connector
from sync.hooks import recompute_customers
from sync.identities import link_identities, pending_links
from sync.landing import LandingStats
from sync.runner import run_stream, tune_gc_for_sync

# In-process listeners (the CLI's progress bar): called after every landed batch with the totals so far.
ProgressListener = Callable[[str, LandingStats], None]
_listeners: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> Callable[[], None]:
    """Register `listener`; returns the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def _notify(key: str, stats: LandingStats) -> None:
    for listener in list(_listeners):
        listener(key, stats)


def _settings(base_url: str | None, simulator: bool = False) -> SyncSettings:
    """The configured settings, or every channel pointed at `base_url` (with the simulator's clock when
    `simulator`)."""
    settings = get_sync_settings()
    if not base_url:
        return settings
    return settings.pointed_at_simulator(base_url) if simulator else settings.pointed_at(base_url)


def retry_unless_permanent(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Task retries are for transient failures (their HTTP retries ran out, the database blinked). A
    permanent one (a 4xx: bad credentials, bad parameters) fails the task at once with its cause: retrying
    it only delays the error by the retry delays."""
    if isinstance(state.data, BaseException):
        return not isinstance(state.data, PermanentError)
    return "PermanentError(" not in (state.message or "")


@task(
    name="pull-and-land",
    task_run_name="{channel}.{stream}",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_unless_permanent,
    cache_policy=NO_CACHE,
)
async def land_stream(
    channel: str,
    stream: str,
    since: datetime | None = None,
    base_url: str | None = None,
    simulator: bool = False,
) -> dict[str, Any]:
    """Pull one stream from its watermark and land it; returns counts and the identity ids touched."""
    logger = get_run_logger()
    connector = make_connector(channel, _settings(base_url, simulator))
    batches = 0

    def progress(key: str, stats: LandingStats) -> None:
        nonlocal batches
        batches += 1
        _notify(key, stats)
        if batches % 20 == 0:
            logger.info("%s: %s so far", key, stats.summary())

    try:
        stats = await run_stream(
            get_engine(), connector, stream, since=since, progress=progress, run_id=sync_run_id()
        )
    finally:
        await connector.aclose()
    logger.info(
        "%s.%s landed %s after %d requests (%d retries)",
        channel, stream, stats.summary(), connector.client.stats.requests, connector.client.stats.retries,
    )  # fmt: skip
    return {"counts": stats.summary(), "identity_ids": sorted(stats.identity_ids),
            "retries": connector.client.stats.retries}  # fmt: skip


# The sync run a stream belongs to: set by the outermost sync flow, inherited by its subflows and tasks (they
# run in copies of its context). Asking Prefect's API for the root run instead would block the event loop.
_SYNC_RUN: ContextVar[UUID | None] = ContextVar("sync_run", default=None)


def sync_run_id() -> UUID | None:
    """The run's id: sync-all's flow run, or the channel flow run alone (None outside a flow)."""
    from prefect.context import FlowRunContext

    if (known := _SYNC_RUN.get()) is not None:
        return known
    ctx = FlowRunContext.get()
    return None if ctx is None or ctx.flow_run is None else UUID(str(ctx.flow_run.id))


def _start_sync_run() -> None:
    """Called first by every sync flow: the outermost one names the run."""
    if _SYNC_RUN.get() is None:
        _SYNC_RUN.set(sync_run_id())


@task(
    name="link-identities",
    task_run_name="link-identities",
    retries=1,
    retry_delay_seconds=10,
    cache_policy=NO_CACHE,
)
async def link_task(identity_ids: list[int]) -> dict[str, Any]:
    """Identity resolution for the identities a run touched and every identity still waiting for a customer
    (landed by a run that stopped before linking); returns the golden customers touched ("customers") and
    how many identities got their first customer ("linked")."""
    engine = get_engine()
    waiting = await pending_links(engine)
    _notify_linking("start", waiting)
    customers = await link_identities(engine, set(identity_ids))
    left = await pending_links(engine)
    _notify_linking("done", waiting - left)
    get_run_logger().info(
        "linked %d identities (%d were waiting), %d customers touched; %d still waiting",
        len(set(identity_ids)), waiting, len(customers), left,
    )  # fmt: skip
    return {"customers": sorted(customers), "linked": waiting - left}


@task(name="heal-quarantine", task_run_name="{channel}.heal", retries=1, cache_policy=NO_CACHE)
async def heal_task(channel: str, base_url: str | None = None, simulator: bool = False) -> dict[str, Any]:
    """Dependents whose parent has landed (refunds and their order, orders and their buyer) attach now."""
    from sync.quarantine import heal

    report = await heal(get_engine(), _settings(base_url, simulator), channel)
    if report.refunds_replayed or report.orders_attached:
        get_run_logger().info("%s: healed %s", channel, report.summary())
    return {"counts": report.summary(), "identity_ids": sorted(report.identity_ids)}


LinkListener = Callable[[str, int], None]
_link_listeners: list[LinkListener] = []


def add_link_listener(listener: LinkListener) -> Callable[[], None]:
    """Register `listener` for the link step: ("start", identities waiting), then ("done", identities linked)."""
    _link_listeners.append(listener)
    return lambda: _link_listeners.remove(listener)


def _notify_linking(phase: str, count: int) -> None:
    for listener in list(_link_listeners):
        listener(phase, count)


@task(name="recompute-customers", task_run_name="recompute-customers", retries=1, cache_policy=NO_CACHE)
async def recompute_task(customer_ids: list[int]) -> int:
    return await recompute_customers(get_engine(), set(customer_ids))


def die_with_serve() -> None:
    """Under `c360 sync serve` each flow run is a child process: have the kernel send it SIGTERM when
    `serve` dies, even by SIGKILL, so no flow engine outlives it (Prefect's engine then marks the run
    Crashed). Only for deployment runs: `c360 sync run` runs flows in its own process."""
    import ctypes
    import os
    import signal
    import sys

    from prefect.runtime import deployment

    if deployment.id is None or not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() == 1:  # serve died before the call above took effect
        os.kill(os.getpid(), signal.SIGTERM)


async def _channel(
    channel: str, since: datetime | None, base_url: str | None, simulator: bool, link: bool
) -> dict[str, Any]:
    die_with_serve()
    _start_sync_run()
    # Also here, not only in the CLI: `prefect serve` runs scheduled flows in processes of its own.
    tune_gc_for_sync()
    connector = make_connector(channel, _settings(base_url, simulator))
    streams = connector.streams
    await connector.aclose()
    result: dict[str, Any] = {"channel": channel, "streams": {}, "identity_ids": []}
    ids: set[int] = set()
    # Streams of one channel run in order: refunds need their trades, pushes their followers.
    for stream in streams:
        out = await land_stream.with_options(task_run_name=f"{channel}.{stream}")(
            channel, stream, since, base_url, simulator
        )
        result["streams"][stream] = out["counts"]
        ids.update(out["identity_ids"])
    healed = await heal_task(channel, base_url, simulator)
    result["healed"] = healed["counts"]
    ids.update(healed["identity_ids"])
    result["identity_ids"] = sorted(ids)
    if link:
        linking = await link_task(sorted(ids))
        result["customers_touched"] = len(linking["customers"])
        result["identities_linked"] = linking["linked"]
        await recompute_task(linking["customers"])
        result["golden_customers"] = await golden_customers(get_engine())
    result["identities_waiting"] = await pending_links(get_engine())
    result["run_id"] = str(sync_run_id())
    report_run(result_line(channel, result))
    return result


def result_line(channel: str, result: dict[str, Any]) -> str:
    """One line of figures for a channel run: what landed, what was quarantined, what was linked."""
    totals: dict[str, int] = {}
    for counts in result["streams"].values():
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value
    accounting = ("quarantined", "read", "landed", "unchanged", "rejected")
    landed = ", ".join(f"{v} {k}" for k, v in totals.items() if v and k not in accounting) or "nothing new"
    line = f"sync-{channel}: landed {landed}; quarantined {totals.get('quarantined', 0)}"
    line += f"; {totals.get('read', 0)} rows read, {totals.get('unchanged', 0)} unchanged"
    if totals.get("rejected"):
        line += f", {totals['rejected']} files rejected"
    line += f"; {len(result['identity_ids'])} identities touched"
    if "customers_touched" in result:
        line += f", {result['customers_touched']} customers linked"
    if "identities_waiting" in result:
        line += f"; {result['identities_waiting']} identities waiting to be linked"
    return line


def report_run(line: str) -> None:
    """The run's figures, one line in its logs: the Prefect UI shows it, and so does `serve`'s output."""
    get_run_logger().info("%s", line)


@flow(name="sync-tmall")
async def sync_tmall(
    since: datetime | None = None, base_url: str | None = None, simulator: bool = False, link: bool = True
) -> dict[str, Any]:
    """Tmall/Taobao: trades, then refunds."""
    return await _channel("tmall", since, base_url, simulator, link)


@flow(name="sync-jd")
async def sync_jd(
    since: datetime | None = None, base_url: str | None = None, simulator: bool = False, link: bool = True
) -> dict[str, Any]:
    """JD: orders."""
    return await _channel("jd", since, base_url, simulator, link)


@flow(name="sync-app")
async def sync_app(
    since: datetime | None = None, base_url: str | None = None, simulator: bool = False, link: bool = True
) -> dict[str, Any]:
    """Own app / site / mini-program: members, orders, browsing events."""
    return await _channel("app", since, base_url, simulator, link)


@flow(name="sync-wechat")
async def sync_wechat(
    since: datetime | None = None, base_url: str | None = None, simulator: bool = False, link: bool = True
) -> dict[str, Any]:
    """WeChat official account: followers, then pushed events and messages."""
    return await _channel("wechat", since, base_url, simulator, link)


@flow(name="sync-weibo")
async def sync_weibo(
    since: datetime | None = None, base_url: str | None = None, simulator: bool = False, link: bool = True
) -> dict[str, Any]:
    """Weibo: comments and mentions."""
    return await _channel("weibo", since, base_url, simulator, link)


@flow(name="sync-pos")
async def sync_pos(
    since: datetime | None = None, base_url: str | None = None, simulator: bool = False, link: bool = True
) -> dict[str, Any]:
    """Store POS: the HTTP feed, then the drop folder."""
    return await _channel("pos", since, base_url, simulator, link)


@flow(name="sync-catalog")
async def sync_catalog(base_url: str | None = None, simulator: bool = False) -> dict[str, Any]:
    """The product catalogue, so order lines find their products; `serve` runs it on its own schedule."""
    die_with_serve()
    out = await land_stream.with_options(task_run_name="catalog.products")(
        "catalog", "products", None, base_url, simulator
    )
    counts = out["counts"]
    report_run(f"sync-catalog: landed {counts['products']} products; quarantined {counts['quarantined']}")
    return dict(counts)


CHANNEL_FLOWS = {
    "tmall": sync_tmall,
    "jd": sync_jd,
    "app": sync_app,
    "wechat": sync_wechat,
    "weibo": sync_weibo,
    "pos": sync_pos,
}


@flow(name="sync-all")
async def sync_all(
    since: datetime | None = None,
    base_url: str | None = None,
    simulator: bool = False,
    channels: list[str] | None = None,
) -> dict[str, Any]:
    """The catalogue, then every enabled channel concurrently, then identity linking for the identities
    touched and the CRM recomputation hook for the customers touched."""
    _start_sync_run()
    settings = _settings(base_url, simulator)
    codes = channels or [c for c in CHANNEL_CODES if settings.channel(c).enabled]
    catalog = await land_stream.with_options(task_run_name="catalog.products")(
        "catalog", "products", None, base_url, simulator
    )
    results = await asyncio.gather(
        *(
            CHANNEL_FLOWS[c].with_options(flow_run_name=f"sync-{c}")(
                since=since, base_url=base_url, simulator=simulator, link=False
            )
            for c in codes
        )
    )
    ids: set[int] = set()
    for r in results:
        ids.update(r["identity_ids"])
    linking = await link_task(sorted(ids))
    customers = linking["customers"]
    recomputed = await recompute_task(customers)
    return {
        "run_id": str(sync_run_id()),
        "catalog": catalog["counts"],
        "channels": {r["channel"]: r["streams"] for r in results},
        "healed": {r["channel"]: r["healed"] for r in results},
        "identities_touched": len(ids),
        "identities_linked": linking["linked"],
        "customers_touched": len(customers),
        "customers_recomputed": recomputed,
        "golden_customers": await golden_customers(get_engine()),
        "identities_waiting": await pending_links(get_engine()),
    }


async def golden_customers(engine: Any) -> int:
    """Golden customers standing (merged and erased ones excluded): the closing table's last figure."""
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(sa.text("select count(*) from golden_customer where status = 'active'"))
            ).scalar_one()
        )
