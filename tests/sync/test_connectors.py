"""Every connector against the simulator over loopback: complete pulls, standardized identities with
their raw payload, watermarks that make a second run fetch only what is new, and late status updates
applied in place."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import numpy as np
import pytest

from sync.config import SyncSettings
from sync.connectors.registry import make_connector
from sync.simulator.orders import FINISHED, PAID, REFUND_ASKED, REFUNDED, SHIPPED
from sync.simulator.state import SimulatorState
from tests.conftest import fetch_rows
from tests.sync.conftest import SMALL, count, run, sim_get, sim_post, sim_truth, simulator, snapshot

# Pages far smaller than each feed, so every connector has to follow several pages per stream (a
# connector stopping after its first page lands a fraction and fails), and WeChat's follower list
# comes in several pages too.
PAGE_SIZES = {"tmall": 10, "jd": 10, "app": 50, "wechat": 40, "weibo": 10, "pos": 50}
PAGED = replace(SMALL, wechat_page_size=40)


def _paged(settings: SyncSettings) -> SyncSettings:
    data = settings.model_dump()
    for channel, size in PAGE_SIZES.items():
        data[channel] = {**data[channel], "page_size": size}
    return SyncSettings.model_validate(data)


def served_in_full(state: SimulatorState) -> dict[str, int]:
    """What each list endpoint of the simulator offers over the whole history at its clock, from the
    simulator's own model: Tmall and the app list every order from creation, JD only paid ones (never the
    unpaid orders it closed), POS once the transaction reached the back office; every WeChat push and app
    event is one interaction."""
    now = state.now
    out: dict[str, int] = {}
    for channel in ("tmall", "jd", "app", "pos"):
        feed = state.feeds[channel]
        timeline = feed.timeline(np.arange(feed.visible_count(now)))
        if channel == "jd":
            paid = np.isin(timeline.stage_at(now), [PAID, SHIPPED, FINISHED, REFUND_ASKED, REFUNDED])
            out[channel] = int(paid.sum())
        elif channel == "pos":
            out[channel] = int((timeline.delivered <= now).sum())
        else:
            out[channel] = len(timeline.index)
    out["wechat"] = len(state.wechat_history()[0])
    out["app_events"] = state.stream("app-events").visible_count(now)
    return out


async def weibo_totals(base: str) -> dict[str, int]:
    """The `total_number` the Weibo endpoints report for comments and mentions."""
    token: dict[str, str | int] = {"access_token": SMALL.weibo_access_token, "count": 1}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        comments = (await client.get("/weibo/2/comments/to_me.json", params=token)).json()
        mentions = (await client.get("/weibo/2/statuses/mentions.json", params=token)).json()
    return {"comment": int(comments["total_number"]), "mention": int(mentions["total_number"])}


@pytest.fixture
def paged_sim() -> Iterator[str]:
    with simulator(PAGED) as base:
        yield base


async def test_all_channels_land_everything_the_simulator_shows(paged_sim, settings_for, clean_db):
    sim, settings = paged_sim, _paged(settings_for(paged_sim))
    await run(clean_db, settings, "catalog")
    results = {
        ch: await run(clean_db, settings, ch) for ch in ("tmall", "jd", "app", "wechat", "weibo", "pos")
    }
    expected = served_in_full(SimulatorState.create(PAGED))  # the clock has not moved: the initial now
    visible = {ch: feed["visible"] for ch, feed in (await sim_get(sim, "/_sim/stats"))["feeds"].items()}

    landed = {
        ch: await count(clean_db, "select count(*) from orders where channel_code = :c", c=ch)
        for ch in ("tmall", "jd", "app", "pos")
    }
    # Every order the channel lists, exactly, over several pages of each feed.
    assert landed == {ch: expected[ch] for ch in landed}
    for ch in landed:
        assert expected[ch] > 5 * PAGE_SIZES[ch], ch
    assert landed["tmall"] == visible["tmall"] and landed["app"] == visible["app"]
    assert results["tmall"]["refunds"]["refunds"] > 0

    async def interactions(channel: str, prefix: str = "") -> int:
        return await count(
            clean_db,
            "select count(*) from interaction where channel_code = :c and external_id like :p",
            c=channel,
            p=f"{prefix}%",
        )

    weibo = await weibo_totals(sim)
    assert weibo["comment"] > 2 * PAGE_SIZES["weibo"] and weibo["mention"] > 2 * PAGE_SIZES["weibo"]
    assert await interactions("weibo", "comment:") == weibo["comment"]
    assert await interactions("weibo", "mention:") == weibo["mention"]
    assert await interactions("weibo") == weibo["comment"] + weibo["mention"]
    assert await interactions("wechat") == expected["wechat"] > 2 * PAGE_SIZES["wechat"]
    assert await interactions("app", "event:") == expected["app_events"] > 2 * PAGE_SIZES["app"]
    # Every current follower, listed over several pages, landed with its full profile (not a push's stub).
    followers = sum(f.subscribed for f in SimulatorState.create(PAGED).wechat_history()[1].values())
    assert followers > 2 * PAGED.wechat_page_size
    assert await count(clean_db, "select count(*) from source_identity where channel_code = 'wechat' "
                       "and raw->>'subscribe' = '1'") == followers  # fmt: skip

    # Lines are exact and tied to the catalogue; every order with a buyer points at its identity.
    assert await count(clean_db, "select count(*) from order_line where product_id is null") == 0
    assert await count(clean_db, "select count(*) from order_line where amount_fen <> unit_price_fen * quantity "
                       "- discount_fen") == 0  # fmt: skip
    assert await count(clean_db, "select count(*) from orders where channel_code in ('tmall','jd','app') "
                       "and source_identity_id is null") == 0  # fmt: skip
    # Identities carry the raw payload and the standardized attributes.
    assert await count(clean_db, "select count(*) from source_identity where raw = '{}'::jsonb") == 0
    assert await count(clean_db, "select count(*) from source_identity where channel_code = 'tmall' "
                       "and phone_masked like '1%****%'") > 0  # fmt: skip
    assert await count(clean_db, "select count(*) from source_identity where channel_code = 'app' "
                       "and phone like '+861%' and phone_verified") > 0  # fmt: skip
    assert await count(clean_db, "select count(*) from source_identity where channel_code = 'wechat' "
                       "and wechat_unionid is not null") > 0  # fmt: skip
    # POS: stores landed, a member keyed by the phone typed at the till has that phone (linking matches on it),
    # one keyed by a card its member no.; placeholder phones stay anonymous.
    assert await count(clean_db, "select count(*) from store") == 12
    assert await count(clean_db, "select count(*) from source_identity where channel_code = 'pos' "
                       "and phone is null and member_no is null") == 0  # fmt: skip
    assert await count(clean_db, "select count(*) from source_identity where channel_code = 'pos' "
                       "and phone = '+86' || external_id") > 0  # fmt: skip
    assert await count(clean_db, "select count(*) from source_identity where channel_code = 'pos' "
                       "and external_id in ('13800000000', '13888888888', '18888888888')") == 0  # fmt: skip
    # The simulator's ground truth names every landed identity by the key it landed under, so linking can be
    # scored against it.
    keys = await fetch_rows(clean_db, "select channel_code || ':' || external_id from source_identity")
    assert {r[0] for r in keys} <= set(await sim_truth(sim))
    # A Tmall refund names the line it refunds (`oid`): it lands with that line's number.
    connector = make_connector("tmall", settings)
    named: dict[str, str | None] = {}
    async for batch in connector.pull("refunds", None, None):
        named.update({r.external_id: r.line_external_id for r in batch.refunds})
    await connector.aclose()
    refunded_lines = await fetch_rows(clean_db, "select r.external_id, l.external_id from refund r left join "
                                      "order_line l on l.order_id = r.order_id and l.line_no = r.line_no")  # fmt: skip
    assert named and None not in named.values()
    assert dict(refunded_lines) == named
    # WeChat follows granted marketing consent.
    assert await count(clean_db, "select count(*) from consent where purpose = 'marketing_wechat' "
                       "and status = 'granted'") > 0  # fmt: skip


@pytest.mark.parametrize("channel", ["tmall", "jd", "app", "wechat", "weibo", "pos"])
async def test_second_run_fetches_only_what_is_new(channel, sim, settings_for, clean_db):
    settings = settings_for(sim)
    first = await run(clean_db, settings, channel)
    before = await snapshot(clean_db)

    again = await run(clean_db, settings, channel)
    # Nothing changed at the source: the watermark makes the rerun a handful of requests, and whatever
    # it re-reads at the boundary lands as the same rows.
    assert again["_requests"].requests < max(8, first["_requests"].requests // 4)
    assert await snapshot(clean_db) == before

    await sim_post(sim, "/_sim/advance", {"minutes": 36 * 60})
    third = await run(clean_db, settings, channel)
    after = await snapshot(clean_db)
    total = third["_total"]
    grown = {k: len(after[k]) - len(before[k]) for k in ("orders", "interaction")}
    assert grown["orders"] + grown["interaction"] > 0
    # What the third run landed is new or changed since the watermark, not the whole feed again.
    assert total.orders + total.interactions < (len(before["orders"]) + len(before["interaction"])) // 2


@pytest.mark.parametrize("channel", ["tmall", "jd", "app"])
async def test_status_updates_are_applied_in_place(channel, sim, settings_for, clean_db):
    settings = settings_for(sim)
    await run(clean_db, settings, channel)
    orders_before = await count(clean_db, "select count(*) from orders")
    lines_before = await count(clean_db, "select count(*) from order_line")
    status_before = dict((r[1], r[3]) for r in (await snapshot(clean_db))["orders"])

    updated = (await sim_post(sim, "/_sim/update_orders", {"count": 8, "channels": [channel]}))["updated"]
    assert updated
    await run(clean_db, settings, channel)

    after = {r[1]: r for r in (await snapshot(clean_db))["orders"]}
    assert await count(clean_db, "select count(*) from orders") == orders_before
    assert await count(clean_db, "select count(*) from order_line") == lines_before
    changed = [
        u["external_id"] for u in updated if after[u["external_id"]][3] != status_before[u["external_id"]]
    ]
    assert len(changed) == len(updated), (updated, [after[u["external_id"]][3:5] for u in updated])
