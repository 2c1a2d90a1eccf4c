"""Persisted queries over HTTP: Apollo's automatic protocol, and an allow-list that runs nothing else."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from api.persisted import sha256
from tests.api.graphql_support import Api, api_server

HEALTH = "{ health { database } }"


async def post(api: Api, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=api.base) as client:
        return await client.post(
            "/graphql", json=body, headers={"Authorization": f"Bearer {api.token('member', '1')}"}
        )


def persisted(document: str) -> dict[str, object]:
    return {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256(document)}}}


async def test_automatic_persisted_queries(database_url: str) -> None:
    with api_server(database_url) as api:
        unknown = await post(api, persisted(HEALTH))
        registered = await post(api, {"query": HEALTH, **persisted(HEALTH)})
        by_hash = await post(api, persisted(HEALTH))
        mismatch = await post(api, {"query": "{ me { customerId } }", **persisted(HEALTH)})
    assert unknown.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert registered.json() == {"data": {"health": {"database": True}}}
    assert by_hash.json() == {"data": {"health": {"database": True}}}
    assert mismatch.status_code == 400
    assert mismatch.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_HASH_MISMATCH"


async def test_an_allow_list_runs_only_its_documents(database_url: str, tmp_path: Path) -> None:
    store = tmp_path / "persisted.json"
    store.write_bytes(orjson.dumps({sha256(HEALTH): HEALTH}))
    with api_server(database_url, api_persisted_queries=store, api_persisted_only=True) as api:
        listed = await post(api, persisted(HEALTH))
        free_form = await post(api, {"query": "{ me { customerId } }"})
        unlisted = await post(api, {"query": "{ me { customerId } }", **persisted("{ me { customerId } }")})
    assert listed.json() == {"data": {"health": {"database": True}}}
    assert free_form.status_code == 400
    assert free_form.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"
    assert unlisted.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"

    store.write_bytes(orjson.dumps({"0" * 64: HEALTH}))
    with pytest.raises(ValueError, match=r"entry '0{64}' is not the sha256 of its document"):
        with api_server(database_url, api_persisted_queries=store):
            pass
