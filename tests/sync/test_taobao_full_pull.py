"""A Tmall shop connected for the first time is read in full with `taobao.trades.sold.get` by creation time
in week-long windows, not day by day with the increment method; its watermark is the pull's end, so the
next run is incremental (`taobao.trades.sold.increment.get`) and sees what changed after it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from sync.connectors.taobao import TaobaoConnector
from tests.conftest import fetch_rows
from tests.sync.conftest import count, run, sim_get, sim_post


@pytest.fixture
def methods(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """The TOP methods the connector calls (the real calls, counted on the way)."""
    seen: Counter[str] = Counter()
    real = TaobaoConnector.call

    async def counted(self: TaobaoConnector, method: str, params: dict[str, Any], parse: Any = None) -> Any:
        seen[method] += 1
        return await real(self, method, params, parse)

    monkeypatch.setattr(TaobaoConnector, "call", counted)
    return seen


async def test_first_pull_in_full_then_increments(sim, settings_for, clean_db, methods):
    settings = settings_for(sim)
    await run(clean_db, settings, "tmall")
    visible = (await sim_get(sim, "/_sim/stats"))["feeds"]["tmall"]["visible"]
    # Every trade the shop has, from the full pull alone.
    assert await count(clean_db, "select count(*) from orders where channel_code = 'tmall'") == visible > 0
    assert methods["taobao.trades.sold.get"] > 0
    assert methods["taobao.trades.sold.increment.get"] == 0
    # Week windows: one count call per 7 days of look-back (and the pages), not one per day.
    weeks = -(-settings.initial_lookback_days // 7)
    assert methods["taobao.trades.sold.get"] < weeks + visible // 10 + 10
    assert methods["taobao.trades.sold.get"] < settings.initial_lookback_days
    [(watermark,)] = await fetch_rows(
        clean_db, "select watermark_at from sync_watermark where connector = 'tmall.trades'"
    )
    assert watermark is not None

    # Changes after the pull's end come from the increment method, from that watermark on.
    sql = "select external_id, source_status from orders where channel_code = 'tmall'"
    before = dict(await fetch_rows(clean_db, sql))
    methods.clear()
    updated = (await sim_post(sim, "/_sim/update_orders", {"count": 6, "channels": ["tmall"]}))["updated"]
    assert updated
    await run(clean_db, settings, "tmall")
    assert methods["taobao.trades.sold.get"] == 0 and methods["taobao.trades.sold.increment.get"] > 0
    after = dict(await fetch_rows(clean_db, sql))
    assert [u["external_id"] for u in updated if after[u["external_id"]] == before[u["external_id"]]] == []
