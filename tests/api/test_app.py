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
    page, asset = {"accept": "text/html"}, "/graphiql/graphiql.min.js"
    with live_server(create_app(_settings(database_url, "development")), "/healthz") as base:
        dev = httpx.get(base + "/graphql", headers=page)
        dev_asset = httpx.get(base + asset)
    production = _settings(database_url, "production")
    token = issue_token(production, "alice", "staff")
    with live_server(create_app(production), "/healthz") as base:
        prod = httpx.get(base + "/graphql", headers=page)
        prod_with_token = httpx.get(base + "/graphql", headers={**page, "authorization": f"Bearer {token}"})
        prod_asset = httpx.get(base + asset)
        query = httpx.post(
            base + "/graphql",
            json={"query": "{ __typename }"},
            headers={"authorization": f"Bearer {token}"},
        )
    assert dev.status_code == 200 and dev.headers["content-type"].startswith("text/html")
    assert "graphiql" in dev.text.lower() and dev_asset.status_code == 200
    # In production the page is not served: the request is an API request like any other, and has no token.
    assert prod.status_code == 401
    assert prod.headers["www-authenticate"] == 'Bearer realm="c360"'
    assert prod.json() == {
        "errors": [
            {
                "message": "missing bearer token: send 'Authorization: Bearer <token>' (c360 api token)",
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ]
    }
    # With a token there is still no page (Strawberry answers 404 when its IDE is off), nor its assets,
    # while the API itself answers.
    assert (prod_with_token.status_code, prod_with_token.text) == (404, "Not Found")
    assert (prod_asset.status_code, prod_asset.text) == (404, "Not Found")
    assert query.status_code == 200 and query.json() == {"data": {"__typename": "Query"}}
