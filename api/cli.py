"""The `c360` command line: serve the API, migrate the database, run sync and identity work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import FrameType
from typing import NoReturn, TypeVar

import typer
import uvicorn
from pydantic import ValidationError

from infra.db import DatabaseConfigError, ensure_reachable, make_engine, resolve_database_url
from infra.embedded import EmbeddedDatabaseError
from infra.settings import Settings, get_settings, mask_url

app = typer.Typer(
    help="Customer 360: omnichannel sync, identity resolution, CRM and a GraphQL API.", no_args_is_help=True
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def describe_settings_error(exc: ValidationError) -> str:
    """One line per bad setting, named by its environment variable."""
    parts = []
    for err in exc.errors():
        field = "_".join(str(p) for p in err["loc"]).upper()
        parts.append(f"C360_{field}={err.get('input')!r}: {err['msg']}")
    return "invalid configuration: " + "; ".join(parts)


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        fail(describe_settings_error(exc))


def guarded(fn: Callable[[], T]) -> T:
    """Turn configuration and connection failures into one clear message instead of a traceback."""
    try:
        return fn()
    except (DatabaseConfigError, EmbeddedDatabaseError) as exc:
        fail(str(exc))


def database_url_checked(settings: Settings) -> str:
    """Resolve the database URL (starting the embedded server if needed) and prove it answers."""

    def run() -> str:
        url = resolve_database_url(settings)

        async def probe() -> None:
            engine = make_engine(url, 1, settings.db_connect_timeout)
            try:
                await ensure_reachable(engine, url, settings.db_connect_timeout)
            finally:
                await engine.dispose()

        asyncio.run(probe())
        return url

    return guarded(run)


@db_app.command("upgrade")
def db_upgrade(
    revision: str = typer.Argument("heads", help="Target revision (default: every head)."),
) -> None:
    """Apply migrations up to REVISION (default: heads)."""
    from infra.migrate import upgrade

    settings = load_settings()
    url = database_url_checked(settings)
    upgrade(url, revision)
    typer.echo(f"database at {mask_url(url)} is at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision, e.g. base.")) -> None:
    """Revert migrations down to REVISION."""
    from infra.migrate import downgrade

    settings = load_settings()
    url = database_url_checked(settings)
    downgrade(url, revision)
    typer.echo(f"database at {mask_url(url)} is at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Show the revision the database is at."""
    from infra.migrate import current

    current(database_url_checked(load_settings()))


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, which kills the process before
    atexit handlers run; returning normally lets the embedded PostgreSQL stop cleanly."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def serve_api(settings: Settings, migrate: bool) -> None:
    """Migrate (optionally) and serve the API until SIGINT/SIGTERM."""
    from api.app import create_app

    url = database_url_checked(settings)
    if migrate:
        from infra.migrate import upgrade

        upgrade(url, "heads")
    typer.echo(
        f"Customer 360 API on http://{settings.host}:{settings.port}/graphql (database {mask_url(url)})"
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # One log line per request costs a tenth of a compiled read's CPU (bench/api.py --profile).
        access_log=settings.api_access_log,
    )
    GracefulServer(config).run()


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default C360_HOST)."),
    port: int | None = typer.Option(None, help="Port (default C360_PORT)."),
    migrate: bool = typer.Option(True, help="Apply pending migrations before serving."),
) -> None:
    """Serve the GraphQL API (GraphiQL at /graphql in development) and /healthz."""
    settings = load_settings()
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    if updates:
        try:
            settings = Settings.model_validate({**settings.model_dump(), **updates})
        except ValidationError as exc:
            fail(describe_settings_error(exc))
    serve_api(settings, migrate)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


def _register_subcommands() -> None:
    from api.cli_analytics import analytics_app
    from api.cli_api import api_app, schema_app, token_app
    from api.cli_crm import crm_app
    from api.cli_identity import identity_app
    from api.cli_sync import sync_app

    app.add_typer(analytics_app, name="analytics")
    app.add_typer(api_app, name="api")
    app.add_typer(crm_app, name="crm")
    app.add_typer(identity_app, name="identity")
    app.add_typer(sync_app, name="sync")
    app.add_typer(token_app, name="token")
    app.add_typer(schema_app, name="schema")

    from api.cli_demo import demo

    app.command("demo")(demo)


_register_subcommands()

if __name__ == "__main__":
    main()
