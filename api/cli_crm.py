"""`c360 crm ...`: run the CRM recomputations now, for one customer or for all."""

from __future__ import annotations

import asyncio

import typer

crm_app = typer.Typer(help="CRM rules: loyalty, analytics, service and care.", no_args_is_help=True)


@crm_app.command("recompute")
def recompute_command(
    customer: list[int] = typer.Option(  # noqa: B008
        [], "--customer", help="A golden customer id (repeatable); default: every customer."
    ),
) -> None:
    """Bring points, tiers, segments and care up to date now (what the daily flows do)."""
    from api.cli import database_url_checked, load_settings
    from crm.registry import RECOMPUTE_MODULES, recompute
    from infra.db import make_engine

    url = database_url_checked(load_settings())

    async def run() -> int:
        engine = make_engine(url, 2)
        try:
            return await recompute(engine, set(customer) or None)
        finally:
            await engine.dispose()

    touched = asyncio.run(run())
    domains = ", ".join(m.split(".")[1] for m in RECOMPUTE_MODULES) or "none"
    typer.echo(f"recomputed {touched} customers ({domains})")
