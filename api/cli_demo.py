"""`c360 demo`: the embedded database, the channel simulator on loopback, one full sync_all with a
progress bar, then the API. Nothing to install or configure beyond the project itself."""

from __future__ import annotations

import threading
import time
from typing import Any

import typer

from api.cli_sync import console, print_summary


def start_simulator(config: Any, host: str = "127.0.0.1") -> tuple[str, Any]:
    """Serve the simulator with uvicorn in a daemon thread on a free loopback port; return its URL."""
    import socket

    import uvicorn

    from sync.simulator import create_simulator_app

    with socket.socket() as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_simulator_app(config), host=host, port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="c360-simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not start on {host}:{port}")
        time.sleep(0.05)
    return f"http://{host}:{port}", server


def demo(
    seed: int = typer.Option(42, help="Simulator seed: the same seed gives the same retailer."),
    people: int = typer.Option(2000, min=10, help="Simulated people."),
    orders: int = typer.Option(8000, min=10, help="Simulated orders over Tmall, JD, the app and POS."),
    pos_files: int = typer.Option(300, min=0, help="POS transactions also written to the drop folder."),
    serve: bool = typer.Option(True, help="Serve the API after the sync (--no-serve: stop after it)."),
    port: int | None = typer.Option(None, help="API port (default C360_PORT)."),
) -> None:
    """Start the embedded database and the channel simulator, sync every channel, then serve the API."""
    from api.cli import fail, serve_api
    from api.cli_sync import prepare, run_sync
    from infra.settings import Settings
    from sync.config import get_sync_settings
    from sync.connectors.base import SyncError
    from sync.simulator import SimulatorConfig, write_pos_export

    console.print("[bold]Customer 360 demo[/bold]: database, simulator, sync, API")
    settings, sync_settings = prepare(migrate=True)
    config = SimulatorConfig(seed=seed, people=people, orders=orders)
    base_url, simulator = start_simulator(config)
    console.print(f"simulator on {base_url} (seed {seed}, {people} people, {orders} orders)")
    if pos_files:
        # A register export in the drop folder, so the file path is exercised too (it overlaps the HTTP
        # feed on purpose: the same transactions land once).
        drop = get_sync_settings().pos_drop_dir
        write_pos_export(drop, config, fmt="csv", start_index=0, count=pos_files)
        console.print(f"POS export written to {drop}")
    try:
        result = run_sync(None, None, base_url, simulator=True)
    except SyncError as exc:
        fail(str(exc))
    print_summary(result)
    run_crm()
    run_analytics(settings.data_dir / "report.html")
    run_service()
    if not serve:
        simulator.should_exit = True
        return
    if port is not None:
        settings = Settings.model_validate({**settings.model_dump(), "port": port})
    console.print(f"simulator keeps running on {base_url}: POST {base_url}/_sim/advance then `c360 sync run "
                  f"--base-url {base_url} --simulator` pulls what changed")  # fmt: skip
    serve_api(settings, migrate=False)


def run_crm() -> None:
    """The CRM's daily run over every customer (sync already earned points for the customers it touched):
    tier reviews, campaigns, birthday coupons; then a line of what the programme looks like."""
    import asyncio

    import sqlalchemy as sa

    from crm.loyalty.flows import daily_run
    from infra.db import dispose_engine, get_engine

    async def run() -> tuple[dict[str, Any], list[Any], Any]:
        try:
            counts = await daily_run()
            async with get_engine().connect() as conn:
                tiers = (
                    await conn.execute(
                        sa.text(
                            "select tier_code, count(*) from membership group by 1 order by count(*) desc"
                        )
                    )
                ).all()
                totals = (
                    await conn.execute(
                        sa.text(
                            "select (select coalesce(sum(balance), 0) from points_balance),"
                            " (select coalesce(sum(points_remaining), 0) from points_lot where released_at is null),"
                            " (select count(*) from coupon), (select min(customer_id) from points_balance where balance > 0)"
                        )
                    )
                ).one()
            return counts, list(tiers), totals
        finally:
            await dispose_engine()

    with console.status("loyalty: daily run (points, tiers, campaigns)"):
        counts, tiers, totals = asyncio.run(run())
    members = ", ".join(f"{code} {n}" for code, n in tiers)
    console.print(
        f"loyalty ({counts['rule_version']}): {totals[0]} points available, {totals[1]} pending, "
        f"{totals[2]} coupons; members by tier: {members}"
    )
    if totals[3] is not None:
        console.print(
            f"try a member's own view: `c360 api token --role member --subject {totals[3]}` and query "
            "`{ me { points { balance } membership { tier { name } } } }`"
        )


def run_analytics(report: Any) -> None:
    """The analytics full run over every customer (measures, RFM, lifecycle, CLV, households, tags,
    segments), a line of what the base looks like, and the visual report written to `report`."""
    import asyncio
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from crm.analytics.config import get_config
    from crm.analytics.flows import daily_run
    from crm.analytics.report import render, report_data
    from infra.db import dispose_engine, get_engine

    async def run() -> tuple[dict[str, Any], Any, str]:
        try:
            counts = await daily_run()
            async with get_engine().connect() as conn:
                totals = (
                    await conn.execute(
                        sa.text(
                            "select (select count(*) from customer_metrics where rfm_cell is not null),"
                            " (select count(distinct customer_id) from customer_tag),"
                            " (select count(*) from segment_membership),"
                            " (select string_agg(lifecycle_stage || ' ' || n, ', ' order by n desc) from"
                            "  (select lifecycle_stage, count(*) as n from customer_metrics group by 1) x)"
                        )
                    )
                ).one()
            page = render(await report_data(get_engine(), get_config(), datetime.now(UTC)))
            return counts, totals, page
        finally:
            await dispose_engine()

    with console.status("analytics: measures, RFM, lifecycle, CLV, households, tags, segments"):
        counts, totals, page = asyncio.run(run())
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(page, encoding="utf-8")
    console.print(
        f"analytics ({counts['rule_version']}): {counts['measured']} customers measured ({totals[3]}), "
        f"{totals[0]} in an RFM cell, {counts['clv_predicted']} CLV predictions, {counts['households']} "
        f"households, {totals[1]} customers tagged, {totals[2]} segment memberships; report (opens offline): "
        f"{report}"
    )
    console.print(
        "try: `{ analyticsOverview { byLifecycle { key count } byRfmCell { key count } } }` or "
        '`{ customers(first: 5, filter: {lifecycle: ["at_risk"], valueTier: ["high", "mid"]}) '
        "{ edges { node { customerId rfm { cell } clv { predicted12m { yuan } } tags { name } } } } }`"
    )


def run_service() -> None:
    """The service and care story (crm.service.demo): a complaint through all eight steps, a breached one in
    the queue, the care run's outbox, surveys and classified feedback; then lines of what it left."""
    import asyncio
    from datetime import UTC, datetime

    from crm.loyalty.service import in_transaction
    from crm.service.config import get_config
    from crm.service.demo import DemoResult, run_demo
    from infra.db import dispose_engine, get_engine
    from schema.relay import to_global_id

    async def run() -> DemoResult:
        try:
            return await in_transaction(
                get_engine(), lambda conn: run_demo(conn, get_config(), datetime.now(UTC))
            )
        finally:
            await dispose_engine()

    with console.status("service: cases, SLA check, care triggers, surveys, feedback"):
        r = asyncio.run(run())
    c, b, g = r.complaint, r.breached, r.complaint["granted"]
    console.print(
        f"service ({get_config().version}): complaint {c['case_no']} {c['status']} after 8 steps, "
        f"{g['compensation_fen'] // 100} yuan coupon {g['coupon_code']} and {g['points']} points granted once "
        f"(retry replayed: {c['retry_replayed']}); complaint {b['case_no']} left {b['status']}, resolution SLA "
        f"breached at {b['breached_at']:%Y-%m-%d %H:%M} UTC"
    )
    reasons = ", ".join(f"{n} {reason}" for reason, n in r.outbox["suppressed"].items()) or "none"
    written = ", ".join(f"{k} {n}" for k, n in r.care["written"].items() if n)
    s = r.satisfaction
    needs = ", ".join(f"{f['need']}/{f['priority']}/{f['sentiment']}" for f in r.feedback)
    console.print(
        f"care: written {written or 'nothing new'}; outbox {r.outbox['pending']} pending, suppressed: {reasons}; "
        f"satisfaction of customer {s['customer_id']}: perceived {s['perceived']} / expected {s['expected']} = "
        f"{s['index']:.2f}; feedback classified {needs}"
    )
    console.print(
        "try (staff token): `{ caseQueue(first: 5, filter: {breached: true}) { edges { node { caseNo status "
        "slaSecondsLeft resolveBreachedAt } } } }` or "
        f'`{{ case(id: "{to_global_id("ServiceCase", c["id"])}") {{ status events {{ kind action actor toStatus }} }} }}`; '
        '`{ careOutbox(state: "suppressed") { edges { node { kind suppressedReason } } } }`'
    )
