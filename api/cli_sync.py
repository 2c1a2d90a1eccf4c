"""`c360 sync ...`: run channel flows now, serve them on schedules, inspect and replay quarantine."""

from __future__ import annotations

import typer

sync_app = typer.Typer(help="Channel sync: run flows, serve schedules, quarantine.", no_args_is_help=True)
