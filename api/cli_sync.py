"""`c360 sync ...`: run channel flows now, serve them on schedules, inspect and replay quarantine."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from infra.settings import Settings

sync_app = typer.Typer(help="Channel sync: run flows, serve schedules, quarantine.", no_args_is_help=True)
quarantine_app = typer.Typer(
    help="Rows that failed validation: list them, replay them after a fix.", no_args_is_help=True
)
sync_app.add_typer(quarantine_app, name="quarantine")

console = Console()


def parse_since(value: str | None) -> datetime | None:
    """ISO date or time; a time without a zone is Asia/Shanghai, like the channels' own times."""
    if value is None:
        return None
    from api.cli import fail
    from sync.canonical import aware

    try:
        return aware(datetime.fromisoformat(value))
    except ValueError:
        fail(f"--since {value!r} is not an ISO date or time, e.g. 2026-09-01 or 2026-09-01T08:00:00+08:00")


def prepare(migrate: bool = True, prefect: bool = True, run_logs: bool = False) -> tuple[Settings, Any]:
    """Settings checked (all of them, before any database starts), database reachable (and migrated),
    Prefect's environment set if `prefect`; `run_logs` puts flow runs' INFO lines on the console."""
    from api.cli import database_url_checked, fail, load_settings
    from sync.config import get_sync_settings
    from sync.prefect_setup import configure_prefect

    settings = load_settings()
    try:
        sync_settings = get_sync_settings()
    except ValueError as exc:
        fail(f"invalid C360_SYNC_* configuration: {exc}".replace("\n", "; "))
    url = database_url_checked(settings)
    os.environ.setdefault("C360_DATABASE_URL", url)
    if migrate:
        from infra.migrate import upgrade

        upgrade(url, "heads")
    if prefect:
        configure_prefect(settings, sync_settings, run_logs=run_logs)
        if not run_logs:  # `sync run` and `demo`; `serve` needs a real server (PREFECT_API_URL)
            from sync.prefect_setup import start_temporary_server

            start_temporary_server()
    return settings, sync_settings


@contextmanager
def landing_progress() -> Iterator[Callable[[str, Any], None]]:
    """A rich progress display with one line per stream, fed by the flows' progress listener, and one for
    linking. A stream's bar has a total where the channel tells its count (TOP and JD count each window);
    elsewhere it pulses until the stream ends."""
    from sync.flows import add_link_listener, add_progress_listener

    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<22}"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def listener(key: str, stats: Any) -> None:
        counts = stats.summary()
        shown = ("orders", "refunds", "identities", "interactions", "products", "quarantined")
        text = ", ".join(f"{counts[k]} {k}" for k in shown if counts.get(k))
        # The announced total can trail what was read (a window re-read inclusively): never below it.
        total = max(stats.expected, stats.read) if stats.expected else None
        if key not in tasks:
            tasks[key] = progress.add_task(key, total=total, counts=text)
        progress.update(tasks[key], counts=text, completed=stats.read, total=total)

    def on_link(phase: str, count: int) -> None:
        if phase == "start":
            tasks["link"] = progress.add_task("linking identities", total=None, counts=f"{count} waiting")
        elif "link" in tasks:
            progress.update(tasks["link"], total=max(count, 1), completed=max(count, 1),
                            counts=f"{count} linked")  # fmt: skip

    remove = add_progress_listener(listener)
    remove_link = add_link_listener(on_link)
    try:
        with progress:
            yield listener
            for task_id in tasks.values():
                done = progress.tasks[task_id].completed
                progress.update(task_id, total=done, completed=done)
    finally:
        remove()
        remove_link()


async def _run_flows(
    channel: str | None, since: datetime | None, base_url: str | None, simulator: bool
) -> dict[str, Any]:
    from infra.db import dispose_engine
    from sync.flows import CHANNEL_FLOWS, sync_all

    try:
        if channel is None:
            return await sync_all(since=since, base_url=base_url, simulator=simulator)
        return await CHANNEL_FLOWS[channel](since=since, base_url=base_url, simulator=simulator)
    finally:
        await dispose_engine()


ACCOUNTING = ("read", "landed", "quarantined", "rejected", "unchanged")


def summary_table(result: dict[str, Any]) -> Table:
    """The closing table of a run: per stream, rows read = landed + quarantined + rejected + unchanged."""
    table = Table(title="Sync run")
    table.add_column("stream")
    for c in ACCOUNTING:
        table.add_column(c, justify="right")
    streams: dict[str, dict[str, int]] = {}
    if result.get("catalog"):
        streams["catalog.products"] = result["catalog"]
    channels = result.get("channels") or {result.get("channel", "?"): result.get("streams", {})}
    for code, by_stream in channels.items():
        for stream, counts in by_stream.items():
            streams[f"{code}.{stream}"] = counts
    totals = dict.fromkeys(ACCOUNTING, 0)
    for name, counts in streams.items():
        table.add_row(name, *(str(counts.get(c, 0)) for c in ACCOUNTING))
        for c in ACCOUNTING:
            totals[c] += counts.get(c, 0)
    table.add_section()
    table.add_row("[bold]all streams", *(f"[bold]{totals[c]}" for c in ACCOUNTING))
    return table


def print_summary(result: dict[str, Any]) -> None:
    console.print(summary_table(result))
    healed = result.get("healed") or {}
    per_channel = healed.values() if "channels" in result else [healed]
    refunds = sum(h.get("refunds_resolved", 0) for h in per_channel if h)
    attached = sum(h.get("orders_attached", 0) for h in per_channel if h)
    if refunds or attached:
        console.print(f"quarantine healed: {refunds} refunds landed after their order, {attached} orders "
                      "attached to their buyer")  # fmt: skip
    if "identities_linked" in result:
        console.print(
            f"linked identities: {result['identities_linked']}"
            f" ({result.get('identities_waiting', 0)} still waiting)"
        )
    if "golden_customers" in result:
        console.print(
            f"golden customers: {result['golden_customers']}"
            f" ({result.get('customers_touched', 0)} touched by this run)"
        )


def run_sync(
    channel: str | None, since: datetime | None, base_url: str | None, simulator: bool = False
) -> dict[str, Any]:
    """Run sync_all (or one channel's flow) in-process with a progress display; returns its result."""
    from sync.runner import tune_gc_for_sync

    tune_gc_for_sync()
    with landing_progress():
        result = asyncio.run(_run_flows(channel, since, base_url, simulator))
    return result


@sync_app.command("run")
def run(
    channel: str | None = typer.Option(
        None, "--channel", "-c", help="One channel: tmall, jd, app, wechat, weibo, pos."
    ),
    since: str | None = typer.Option(None, help="Pull from this time instead of the stored watermark (ISO)."),
    base_url: str | None = typer.Option(
        None, help="Point every channel at this base URL (e.g. the simulator)."
    ),
    simulator: bool = typer.Option(
        False, help="The base URL is the simulator: end incremental windows at its virtual clock."
    ),
    migrate: bool = typer.Option(True, help="Apply pending migrations first."),
) -> None:
    """Run the sync flows now: every enabled channel concurrently, or --channel only."""
    from api.cli import fail
    from sync.config import CHANNEL_CODES

    if channel is not None and channel not in CHANNEL_CODES:
        fail(f"--channel {channel!r} is unknown; use one of {', '.join(CHANNEL_CODES)}")
    when = parse_since(since)
    prepare(migrate)
    from sync.connectors.base import SyncError

    try:
        result = run_sync(channel, when, base_url, simulator)
    except SyncError as exc:
        fail(str(exc))
    print_summary(result)


@sync_app.command("serve")
def serve(
    all_cron: str | None = typer.Option(None, help="Also schedule sync-all on this cron (e.g. '0 2 * * *')."),
) -> None:
    """Register one deployment per enabled channel (cron: C360_SYNC_<CHANNEL>__CRON), the catalogue
    (C360_SYNC_CATALOG_CRON) and the scheduled CRM flows on the Prefect server at PREFECT_API_URL, and run
    their scheduled runs until stopped (Ctrl-C or SIGTERM cancel what runs, nothing is left Running).

    Start the server first: `prefect server start`, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`.
    """
    from api.cli import fail

    # configure_prefect (in prepare) leaves a set PREFECT_API_URL alone; check it answers before anything
    # registers, so a wrong one is one line, not a traceback after "scheduled" lines.
    try:
        api_url = check_api_url()
    except RuntimeError as exc:
        fail(str(exc))
    _, sync_settings = prepare(True, run_logs=True)

    from prefect import serve as prefect_serve
    from prefect.client.orchestration import get_client

    from sync.runner import tune_gc_for_sync
    from sync.schedules import (
        HEARTBEAT_SECONDS,
        ServeError,
        deployments,
        disabled_channels,
        prepare_server,
        scheduled_flows,
    )

    tune_gc_for_sync()
    try:
        items = scheduled_flows(sync_settings, all_cron)
        if not items:
            raise ServeError("nothing to schedule: no channel is enabled (C360_SYNC_<CHANNEL>__ENABLED)")
        to_serve = deployments(items)
    except ServeError as exc:
        fail(str(exc))

    async def on_server() -> None:
        async with get_client() as client:
            await prepare_server(
                client,
                items,
                disabled_channels(sync_settings),
                console.print,
                timedelta(seconds=sync_settings.heartbeat_grace_seconds),
            )

    asyncio.run(on_server())
    for item in items:
        console.print(f"scheduled {item.flow.name} on '{item.cron}' ({item.deployment_name})")
    console.print(f"serving {len(items)} deployments on {api_url}; one line per run follows")
    # Heartbeats let the server's automation mark a run Crashed when the machine running it dies.
    prefect_serve(*to_serve, print_starting_message=False, heartbeat_seconds=HEARTBEAT_SECONDS)


def check_api_url() -> str:
    """PREFECT_API_URL, proven to answer; RuntimeError with one line naming it otherwise."""
    from sync.prefect_setup import check_api

    return check_api(os.environ.get("PREFECT_API_URL"))


@quarantine_app.command("list")
def quarantine_list(
    channel: str | None = typer.Option(None, "--channel", "-c", help="Only this channel."),
    entity: str | None = typer.Option(
        None, help="Only this entity: customer, order, refund, interaction, ..."
    ),
    show_all: bool = typer.Option(False, "--all", help="Include resolved rows."),
    limit: int = typer.Option(50, min=1, max=10_000, help="At most this many rows."),
    raw: bool = typer.Option(False, help="Print each row's raw payload too."),
) -> None:
    """Show quarantined rows: channel, entity, external id, and the reason naming the field."""
    prepare(True, prefect=False)
    from infra.db import dispose_engine, get_engine
    from sync.quarantine import count_open, list_quarantine

    async def load() -> tuple[list[Any], dict[str, int]]:
        try:
            rows = await list_quarantine(
                get_engine(), channel=channel, entity=entity, include_resolved=show_all, limit=limit
            )
            return rows, await count_open(get_engine())
        finally:
            await dispose_engine()

    rows, open_counts = asyncio.run(load())
    table = Table(title=f"Quarantine ({sum(open_counts.values())} open)")
    for col in ("id", "channel", "entity", "external id", "seen", "last seen", "state", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = "resolved" if r.resolved_at else ("replayed, failing" if r.replayed_at else "open")
        table.add_row(str(r.id), r.channel, r.entity, r.external_id or "", str(r.seen_count),
                      f"{r.last_seen_at:%Y-%m-%d %H:%M}", state, r.reason)  # fmt: skip
    console.print(table)
    if raw:
        import orjson

        for r in rows:
            console.print(f"[bold]{r.id}[/bold] {orjson.dumps(r.raw).decode()}")


@quarantine_app.command("replay")
def quarantine_replay(
    channel: str | None = typer.Option(None, "--channel", "-c", help="Only this channel."),
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="Only these quarantine ids (repeatable).")
    ] = None,
    refetch: bool = typer.Option(
        False, help="Also read again from the channel the rows it sent malformed (as `c360 sync replay`)."
    ),
    base_url: str | None = typer.Option(
        None, help="With --refetch: the channels' base URL (e.g. the simulator)."
    ),
    simulator: bool = typer.Option(False, help="With --refetch: the base URL is the simulator."),
) -> None:
    """Re-validate open quarantined rows with the current code and mappings; land those that pass."""
    replay_command(channel, ids, refetch, base_url, simulator)


@sync_app.command("replay")
def sync_replay(
    channel: str | None = typer.Option(None, "--channel", "-c", help="Only this channel."),
    ids: Annotated[
        list[int] | None, typer.Option("--id", help="Only these quarantine ids (repeatable).")
    ] = None,
    base_url: str | None = typer.Option(
        None, help="Point every channel at this base URL (e.g. the simulator)."
    ),
    simulator: bool = typer.Option(False, help="The base URL is the simulator (its virtual clock)."),
) -> None:
    """Heal the quarantine: re-validate every open entry, re-fetch from the channel the rows it sent malformed
    (by the window they were read in), then attach dependents whose parent has landed."""
    replay_command(channel, ids, True, base_url, simulator)


def replay_command(
    channel: str | None, ids: list[int] | None, refetch: bool, base_url: str | None, simulator: bool
) -> None:
    _, sync_settings = prepare(True, prefect=False)
    if base_url:
        sync_settings = (
            sync_settings.pointed_at_simulator(base_url) if simulator else sync_settings.pointed_at(base_url)
        )
    from infra.db import dispose_engine, get_engine
    from sync.connectors.base import SyncError
    from sync.hooks import recompute_customers
    from sync.identities import link_identities
    from sync.quarantine import RefetchReport, heal, refetch_quarantine, replay_quarantine

    async def replay() -> tuple[Any, RefetchReport, Any]:
        try:
            engine = get_engine()
            report = await replay_quarantine(engine, sync_settings, channel=channel, ids=ids or None)
            fetched = RefetchReport()
            if refetch:
                fetched = await refetch_quarantine(engine, sync_settings, channel=channel, ids=ids or None)
            healed = await heal(engine, sync_settings, channel)
            touched = report.landed.identity_ids | fetched.landed.identity_ids | healed.identity_ids
            customers = await link_identities(engine, touched)
            await recompute_customers(engine, customers)
            return report, fetched, healed
        finally:
            await dispose_engine()

    from api.cli import fail

    try:
        report, fetched, healed = asyncio.run(replay())
    except SyncError as exc:
        fail(str(exc))
    console.print(
        f"replayed {report.attempted}: {report.resolved} resolved and landed, {report.still_failing} still failing"
    )
    if refetch:
        console.print(
            f"re-fetched {fetched.attempted} from the channel ({', '.join(fetched.streams) or 'no stream'}): "
            f"{fetched.resolved} resolved, {fetched.attempted - fetched.resolved} still open"
        )
    console.print(
        f"healed: {healed.refunds_resolved} refunds landed after their order, {healed.orders_attached} orders "
        "attached to their buyer"
    )
    landed = report.landed
    landed.merge(fetched.landed)
    console.print(", ".join(f"{v} {k}" for k, v in landed.summary().items() if v) or "nothing landed")
