"""`c360 identity ...`: batch resolution of a file, evaluation, and the review queue."""

from __future__ import annotations

import typer

identity_app = typer.Typer(help="Identity resolution: resolve files, evaluate quality.", no_args_is_help=True)
