"""`c360 api token`: issue a bearer token for a role (for consoles, sync jobs, tests and GraphiQL)."""

from __future__ import annotations

from typing import Annotated

import typer

api_app = typer.Typer(help="API access: bearer tokens.", no_args_is_help=True)


@api_app.command("token")
def token(
    role: str = typer.Option(..., help="staff, staff_admin, service or member."),
    subject: str = typer.Option(..., help="Who: a staff login or job name; for a member, their customer id."),
    scope: Annotated[
        list[str] | None, typer.Option(help="Scopes, e.g. --scope pii:read (repeatable).")
    ] = None,
    ttl: int = typer.Option(3600, min=60, max=90 * 24 * 3600, help="Seconds until the token expires."),
) -> None:
    """Print a signed bearer token (signed with C360_JWT_SECRET). Send it as `Authorization: Bearer ...`."""
    from api.auth import ROLES, issue_token
    from api.cli import fail, load_settings

    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    try:
        typer.echo(issue_token(load_settings(), subject, role, scope or [], ttl))
    except ValueError as exc:
        fail(str(exc))


@api_app.command("schema")
def schema_sdl() -> None:
    """Print the GraphQL schema (SDL); docs/schema.graphql is this output, kept in sync by a test."""
    from schema import schema

    typer.echo(schema.as_str())
