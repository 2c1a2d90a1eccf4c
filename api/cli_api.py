"""`c360 api token` / `c360 token issue`: a bearer token for a role (for consoles, sync jobs, tests and
GraphiQL); `c360 api schema` / `c360 schema export`: the GraphQL schema's SDL. The second name of each is
the one issue #17 gives; both run the same code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

api_app = typer.Typer(help="API access: bearer tokens, the schema.", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens for the API.", no_args_is_help=True)
schema_app = typer.Typer(help="The GraphQL schema.", no_args_is_help=True)

_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_TTL, MAX_TTL = 60, 90 * 24 * 3600


def parse_ttl(text: str) -> int:
    """Seconds from `3600`, `90s`, `30m`, `1h` or `7d`, between a minute and 90 days."""
    m = _TTL.match(text.lower())
    if not m:
        raise typer.BadParameter(
            f"{text!r} is not a duration such as 3600, 30m, 1h or 7d", param_hint="--ttl"
        )
    seconds = int(m.group(1)) * _UNIT[m.group(2)]
    if not MIN_TTL <= seconds <= MAX_TTL:
        raise typer.BadParameter("must be between 1 minute and 90 days", param_hint="--ttl")
    return seconds


@api_app.command("token")
def token(
    role: str = typer.Option(..., help="staff, staff_admin, service or member."),
    subject: str | None = typer.Option(
        None,
        help="Who: a staff login or job name (default 'dev'); for a member, their customer id (required).",
    ),
    scope: Annotated[
        list[str] | None, typer.Option(help="Scopes, e.g. --scope pii:read (repeatable).")
    ] = None,
    ttl: str = typer.Option("1h", help="Until the token expires: seconds, or 30m, 1h, 7d."),
) -> None:
    """Print a signed bearer token (signed with C360_JWT_SECRET). Send it as `Authorization: Bearer ...`."""
    from api.auth import ROLES, issue_token
    from api.cli import fail, load_settings

    if role not in ROLES:
        fail(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if subject is None:
        if role == "member":
            fail("--subject is required for a member token: the member's customer id")
        subject = "dev"
    seconds = parse_ttl(ttl)
    try:
        typer.echo(issue_token(load_settings(), subject, role, scope or [], seconds))
    except ValueError as exc:
        fail(str(exc))


@api_app.command("schema")
def schema_sdl(
    output: Annotated[
        Path | None, typer.Option(help="Write it here (e.g. docs/schema.graphql) instead of printing.")
    ] = None,
) -> None:
    """Print the GraphQL schema (SDL); docs/schema.graphql is this output, kept in sync by a test."""
    from schema import schema

    sdl = schema.as_str()
    if output is None:
        typer.echo(sdl)
    else:
        output.write_text(sdl + "\n", encoding="utf-8")


token_app.command("issue")(token)
schema_app.command("export")(schema_sdl)
