"""A permanent 4xx fails the landing task at once with its cause; a transient failure keeps its retries.
Real Prefect task runs (a temporary API server) against the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from prefect import flow

from sync.connectors.base import PermanentError, SyncError
from tests.sync.conftest import prefect_server


async def _attempts(state: Any) -> int:
    """How many times the flow's one task ran (its run_count)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        tasks = await client.read_task_runs()
    [task_run] = [t for t in tasks if t.flow_run_id == state.state_details.flow_run_id]
    return int(task_run.run_count)


async def test_a_4xx_is_not_retried_and_a_transient_failure_is(
    sim, prefect_db, monkeypatch: pytest.MonkeyPatch
):
    import httpx

    from sync import flows

    # No waiting between task retries in the test; the retry policy is what is under test.
    quick = flows.land_stream.with_options(retry_delay_seconds=0)

    @flow
    async def pull(channel: str) -> Any:
        return await quick(channel, "comments" if channel == "weibo" else "orders", None, sim, True)

    async with prefect_server(prefect_db):
        # A refused token is a 4xx: one attempt, and the cause is in the failure.
        monkeypatch.setenv("C360_SYNC_WEIBO__TOKEN", "not-the-token")
        monkeypatch.setenv("C360_SYNC_MAX_RETRIES", "0")
        flows.get_sync_settings.cache_clear()
        state = await pull("weibo", return_state=True)
        assert state.is_failed()
        with pytest.raises(PermanentError, match="expired_token"):
            await state.result()
        assert await _attempts(state) == 1

        # Three 500s outlast the HTTP client's retries (none here): the task is retried and then succeeds.
        monkeypatch.delenv("C360_SYNC_WEIBO__TOKEN")
        flows.get_sync_settings.cache_clear()
        async with httpx.AsyncClient() as client:
            armed = await client.post(
                sim + "/_sim/faults", json={"path_prefix": "/weibo", "kind": "500", "count": 2}
            )
            armed.raise_for_status()
        state = await pull("weibo", return_state=True)
        assert state.is_completed(), state
        assert await _attempts(state) == 3
        flows.get_sync_settings.cache_clear()


def test_the_retry_condition_tells_permanent_from_transient() -> None:
    from prefect.states import Failed

    from sync.flows import retry_unless_permanent

    assert retry_unless_permanent(None, None, Failed(data=PermanentError("jd: HTTP 401"))) is False  # type: ignore[arg-type]
    assert retry_unless_permanent(None, None, Failed(data=SyncError("jd: still failing after 5 retries")))  # type: ignore[arg-type]


async def test_a_4xx_error_names_the_call_and_code_but_not_the_body() -> None:
    """Channels echo the request in their error bodies (phones, names): the error and the logs must not."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from sync.config import SyncSettings
    from sync.connectors.base import ChannelClient
    from tests.support import live_server

    async def refuse(request: Request) -> JSONResponse:
        return JSONResponse(
            {"code": "invalid_mobile", "detail": "mobile 13812345678 of 张伟 is invalid"}, 400
        )

    app = Starlette(routes=[Route("/members", refuse, methods=["POST"])])
    with live_server(app, "/members") as base:
        client = ChannelClient("app", base, SyncSettings())
        try:
            with pytest.raises(PermanentError) as caught:
                await client.request_json("POST", "/members", json={"mobile": "13812345678"})
        finally:
            await client.aclose()
    message = str(caught.value)
    assert "app: POST /members answered HTTP 400" in message and "code=invalid_mobile" in message
    assert "13812345678" not in message and "张伟" not in message
    assert client.stats.requests == 1
