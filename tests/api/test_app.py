"""The API over real HTTP on loopback: /healthz, the health query and GraphiQL."""

from __future__ import annotations

import httpx

from api.app import create_app
from api.auth import issue_token
from infra.settings import Settings
from tests.support import live_server


def _settings(database_url: str, env: str = "development") -> Settings:
    return Settings(database_url=database_url, env=env, jwt_secret="s" * 40, erasure_key="k" * 40)


async def test_health_query_reports_the_database_version(database_url: str) -> None:
    with live_server(create_app(_settings(database_url)), "/healthz") as base:
        async with httpx.AsyncClient(base_url=base) as client:
            health = (await client.get("/healthz")).json()
            token = issue_token(_settings(database_url), "probe", "service")
            reply = await client.post(
                "/graphql",
                json={"query": "{ health { database serverVersion } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
    assert health["status"] == "ok" and health["database"] is True
    data = reply.json()["data"]["health"]
    assert data["database"] is True
    assert data["serverVersion"] == health["serverVersion"]
    assert data["serverVersion"].split(".")[0].isdigit()


def test_graphiql_only_in_development(database_url: str) -> None:
    with live_server(create_app(_settings(database_url, "development")), "/healthz") as base:
        dev = httpx.get(base + "/graphql", headers={"accept": "text/html"})
    with live_server(create_app(_settings(database_url, "production")), "/healthz") as base:
        prod = httpx.get(base + "/graphql", headers={"accept": "text/html"})
    assert dev.status_code == 200 and "graphiql" in dev.text.lower()
    # In production the page is not served: the request is an API request like any other, and has no token.
    assert prod.status_code == 401 and prod.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert "graphiql" not in prod.text.lower()
