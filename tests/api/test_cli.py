"""Bad configuration fails at start with one clear message naming the setting, not a traceback; good
configuration migrates a server given by URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.api.seed import seed
from tests.conftest import create_database, drop_database, fetch_rows, server_url
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def c360(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("C360_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreachable_database_names_the_setting() -> None:
    result = c360(
        "serve",
        C360_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        C360_DB_CONNECT_TIMEOUT="3",
    )
    assert result.returncode == 2
    assert "C360_DATABASE_URL" in result.stderr and "cannot reach PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_port_names_the_setting() -> None:
    result = c360("serve", C360_PORT="eighty")
    assert result.returncode == 2
    assert "C360_PORT='eighty'" in result.stderr
    assert "Traceback" not in result.stderr


def test_out_of_range_port_names_the_setting() -> None:
    result = c360("serve", C360_PORT="70000")
    assert result.returncode == 2 and "C360_PORT" in result.stderr and "Traceback" not in result.stderr


def test_password_is_not_printed() -> None:
    result = c360(
        "db",
        "upgrade",
        C360_DATABASE_URL=f"postgresql://u:s3cret@127.0.0.1:{free_port()}/x",
        C360_DB_CONNECT_TIMEOUT="3",
    )
    assert result.returncode == 2 and "s3cret" not in result.stderr


async def test_db_upgrade_against_a_server_given_by_url() -> None:
    url = await create_database(server_url(), "c360_cli")
    try:
        plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        up = c360("db", "upgrade", C360_DATABASE_URL=plain)
        assert up.returncode == 0, up.stderr
        current = c360("db", "current", C360_DATABASE_URL=plain)
        assert "(head)" in current.stdout + current.stderr
    finally:
        await drop_database(url)


async def test_identity_erase_confirms_refuses_and_erases(
    committed_db: AsyncEngine, database_url: str
) -> None:
    """`c360 identity erase`: nothing happens without --yes; a merged-away customer is refused with the
    reason on one line; the survivor is erased and the result printed as JSON."""
    s = await seed(committed_db)
    env = {"C360_DATABASE_URL": database_url}
    unconfirmed = c360("identity", "erase", str(s.zhang), "--actor", "dpo", "--reason", "PIPL #9", **env)
    merged = c360(
        "identity", "erase", str(s.absorbed), "--actor", "dpo", "--reason", "PIPL #9", "--yes", **env
    )
    done = c360("identity", "erase", str(s.zhang), "--actor", "dpo", "--reason", "PIPL #9", "--yes", **env)
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr
    assert merged.returncode != 0 and "erase the surviving customer" in merged.stderr
    assert "Traceback" not in merged.stderr
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert s.zhang in printed["erased_customer_ids"] and printed["identities"] >= 2
    [(status, name)] = await fetch_rows(
        committed_db, "select status, name from golden_customer where id = :c", c=s.zhang
    )
    assert (status, name) == ("erased", None)


async def test_token_issue_and_schema_export_are_the_commands_the_issue_names(
    committed_db: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """`c360 token issue` prints a token the API accepts, with the --ttl asked for; `c360 schema export`
    writes the committed schema."""
    import jwt
    from gql import gql as document

    from tests.api.graphql_support import api_server

    s = await seed(committed_db)
    secret = "a-development-secret-of-at-least-32-chars"
    issued = c360("token", "issue", "--role", "member", "--subject", str(s.zhang), "--ttl", "2h",
                  C360_JWT_SECRET=secret)  # fmt: skip
    staff = c360(
        "token", "issue", "--role", "staff", "--scope", "pii:read", "--ttl", "30m", C360_JWT_SECRET=secret
    )
    no_subject = c360("token", "issue", "--role", "member", C360_JWT_SECRET=secret)
    bad_ttl = c360("token", "issue", "--role", "staff", "--ttl", "forever", C360_JWT_SECRET=secret)
    assert issued.returncode == 0 and staff.returncode == 0, (issued.stderr, staff.stderr)
    claims = jwt.decode(issued.stdout.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 2 * 3600 and claims["role"] == "member"
    staff_claims = jwt.decode(staff.stdout.strip(), options={"verify_signature": False})
    assert staff_claims["exp"] - staff_claims["iat"] == 1800 and staff_claims["scope"] == "pii:read"
    assert no_subject.returncode != 0 and "--subject" in no_subject.stderr
    assert bad_ttl.returncode != 0 and "--ttl" in bad_ttl.stderr
    with api_server(database_url, jwt_secret=secret) as api:
        async with api.client(token=issued.stdout.strip()) as session:
            me = await session.execute(document("{ me { customerId } }"))
    assert me == {"me": {"customerId": s.zhang}}
    out = tmp_path / "schema.graphql"
    exported = c360("schema", "export", "--output", str(out))
    assert exported.returncode == 0, exported.stderr
    assert out.read_text(encoding="utf-8") == (ROOT / "docs" / "schema.graphql").read_text(encoding="utf-8")
    assert c360("schema", "export").stdout == c360("api", "schema").stdout
