"""`c360 analytics ...`: the visual report of the customer base."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import typer

analytics_app = typer.Typer(help="Customer analytics: the visual report.", no_args_is_help=True)


@analytics_app.command("report")
def report_command(
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="Where to write the HTML file."),  # noqa: B008
) -> None:
    """Write one self-contained HTML file (no outside host): RFM grid, lifecycle funnel, segment sizes over
    time, CLV distribution and channel mix, from the last analytics run (`c360 crm recompute`)."""
    from api.cli import database_url_checked, load_settings
    from crm.analytics.config import AnalyticsConfigError, get_config
    from crm.analytics.report import render, report_data
    from infra.db import make_engine

    url = database_url_checked(load_settings())
    try:
        config = get_config()
    except AnalyticsConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None

    async def run() -> str:
        engine = make_engine(url, 2)
        try:
            return render(await report_data(engine, config, datetime.now(UTC)))
        finally:
            await engine.dispose()

    page = asyncio.run(run())
    output.write_text(page, encoding="utf-8")
    typer.echo(f"report written to {output} ({len(page.encode()) // 1024} KiB, opens offline)")
