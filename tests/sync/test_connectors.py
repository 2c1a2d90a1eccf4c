"""Every connector against the simulator over loopback: complete pulls, standardized identities with
their raw payload, watermarks that make a second run fetch only what is new, and late status updates
applied in place."""

from __future__ import annotations

import pytest

from sync.connectors.registry import make_connector
from tests.conftest import fetch_rows
from tests.sync.conftest import count, run, sim_get, sim_post, sim_truth, snapshot


async def test_all_channels_land_everything_the_simulator_shows(sim, settings_for, clean_db):
    settings = settings_for(sim)
    await run(clean_db, settings, "catalog")
    results = {
        ch: await run(clean_db, settings, ch) for ch in ("tmall", "jd", "app", "wechat", "weibo", "pos")
    }
    visible = {ch: feed["visible"] for ch, feed in (await sim_get(sim, "/_sim/stats"))["feeds"].items()}

    landed = {
        ch: await count(clean_db, "select count(*) from orders where channel_code = :c", c=ch)
        for ch in ("tmall", "jd", "app", "pos")
    }
    # Tmall and the app show every order from creation; JD only once paid; POS once delivered.
    assert landed["tmall"] == visible["tmall"] > 100
    assert landed["app"] == visible["app"] > 100
    assert visible["jd"] - 10 <= landed["jd"] <= visible["jd"]
    assert visible["pos"] - 20 <= landed["pos"] <= visible["pos"]
    assert results["tmall"]["refunds"]["refunds"] > 0
    for ch in ("wechat", "weibo", "app"):
        assert await count(clean_db, "select count(*) from interaction where channel_code = :c", c=ch) > 20

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
