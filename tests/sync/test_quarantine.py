"""Quarantine: bad rows are kept whole with a reason naming the field while the run carries on, and
`replay` lands them after a mapping change or a fix of the payload."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import sqlalchemy as sa
from typer.testing import CliRunner

from api.cli import app as cli
from infra import db as infra_db
from sync.connectors import taobao
from sync.connectors.jd import normalize_orders as normalize_jd_orders
from sync.connectors.taobao import normalize_refunds, normalize_trades
from sync.landing import Lander
from sync.quarantine import count_open, list_quarantine, replay_quarantine
from sync.simulator import SimulatorConfig
from tests.sync.conftest import SMALL, count, run, sim_get, simulator
from tests.sync.factories import jd_order, top_trade

BROKEN = SimulatorConfig(**{**SMALL.__dict__, "malformed_rate": 0.03})


async def test_bad_rows_are_quarantined_and_the_run_carries_on(settings_for, clean_db):
    with simulator(BROKEN) as base:
        result = await run(clean_db, settings_for(base), "tmall")
        visible = (await sim_get(base, "/_sim/stats"))["feeds"]["tmall"]["visible"]
    rows = await list_quarantine(clean_db, channel="tmall", limit=1000)
    trades = [r for r in rows if r.entity == "order"]
    assert trades, "a 3% malformed rate over hundreds of trades quarantines some"
    # Nothing silently dropped: every visible trade either landed or is in quarantine.
    assert await count(clean_db, "select count(*) from orders") + len(trades) == visible
    assert result["trades"]["quarantined"] == len(trades)
    reasons = " | ".join(r.reason for r in trades)
    for field in ("`payment`", "`tid`", "`created`"):
        assert field in reasons
    broken_payment = next(r for r in trades if "`payment`" in r.reason)
    assert broken_payment.raw["payment"] == "12.3O" and broken_payment.external_id == str(
        broken_payment.raw["tid"]
    )


async def test_replay_after_a_mapping_change_lands_the_rows(monkeypatch, sim, settings_for, clean_db):
    settings = settings_for(sim)
    # An older mapping that does not know one status yet.
    monkeypatch.delitem(taobao.TRADE_STATUS, "WAIT_BUYER_CONFIRM_GOODS")
    await run(clean_db, settings, "tmall")
    held = await list_quarantine(clean_db, channel="tmall", entity="order", limit=1000)
    assert held and all("unknown trade status 'WAIT_BUYER_CONFIRM_GOODS'" in r.reason for r in held)
    landed_before = await count(clean_db, "select count(*) from orders")

    monkeypatch.undo()  # the mapping is fixed
    report = await replay_quarantine(clean_db, settings, channel="tmall")

    assert report.resolved == len(held) and report.still_failing == 0
    assert await count(clean_db, "select count(*) from orders") == landed_before + len(held)
    assert await count(clean_db, "select count(*) from orders where source_status = 'WAIT_BUYER_CONFIRM_GOODS' "
                       "and status = 'shipped'") == len(held)  # fmt: skip
    assert await list_quarantine(clean_db, channel="tmall") == []
    assert await count(clean_db, "select count(*) from quarantine where resolved_at is not null") == len(held)


async def test_replay_after_fixing_payloads_and_the_cli(settings_for, clean_db):
    with simulator(BROKEN) as base:
        await run(clean_db, settings_for(base), "tmall")
    held = await list_quarantine(clean_db, channel="tmall", entity="order", limit=1000)
    fixable = [r for r in held if "`payment`" in r.reason]
    # An operator corrects the amount from the trade's own parts, in the quarantined payload.
    async with clean_db.begin() as conn:
        for r in fixable:
            fixed = dict(r.raw)
            fixed["payment"] = str(
                Decimal(fixed["total_fee"]) - Decimal(fixed["discount_fee"]) + Decimal(fixed["post_fee"])
            )
            await conn.execute(sa.text("update quarantine set raw = cast(:raw as jsonb) where id = :id"),
                               {"raw": orjson.dumps(fixed).decode(), "id": r.id})  # fmt: skip

    await infra_db.dispose_engine()
    runner = CliRunner()
    listed = await asyncio.to_thread(runner.invoke, cli, ["sync", "quarantine", "list", "--channel", "tmall"])
    assert listed.exit_code == 0, listed.output
    assert f"Quarantine ({len(held)} open)" in listed.output and "payment" in listed.output
    replayed = await asyncio.to_thread(
        runner.invoke, cli, ["sync", "quarantine", "replay", "--channel", "tmall"]
    )
    assert replayed.exit_code == 0, replayed.output
    assert f"{len(fixable)} resolved and landed, {len(held) - len(fixable)} still failing" in replayed.output

    still = await list_quarantine(clean_db, channel="tmall", entity="order", limit=1000)
    assert {r.id for r in still} == {r.id for r in held} - {r.id for r in fixable}
    assert all(r.replayed_at is not None for r in still)
    tids = [str(r.raw["tid"]) for r in fixable]
    assert await count(clean_db, "select count(*) from orders where channel_code = 'tmall' "
                       "and external_id = any(:ids)", ids=tids) == len(fixable)  # fmt: skip


def _refund(refund_id: str, tid: int) -> dict[str, object]:
    return {"refund_id": refund_id, "tid": tid, "oid": None, "refund_fee": "199.00", "reason": "size",
            "status": "SUCCESS", "created": "2026-10-03 09:00:00", "modified": "2026-10-03 10:00:00"}  # fmt: skip


async def test_a_refund_replayed_before_its_order_lands_stays_open(settings_for, clean_db):
    settings = settings_for("http://127.0.0.1:9")  # replay only normalizes and lands: no channel is called
    refund = _refund("R-77", 7701)
    async with Lander.open(clean_db) as lander:
        await lander.land(normalize_refunds([refund]))
    (held,) = await list_quarantine(clean_db, channel="tmall", entity="refund")
    assert held.external_id == "R-77" and "order 7701 has not landed yet" in held.reason
    assert await count_open(clean_db) == {"tmall": 1}

    # The refund itself is valid now, but landing quarantines it again: it must stay in the open list.
    report = await replay_quarantine(clean_db, settings, channel="tmall")
    assert (report.attempted, report.resolved, report.still_failing) == (1, 0, 1)
    (still,) = await list_quarantine(clean_db, channel="tmall", entity="refund")
    assert still.id == held.id and still.resolved_at is None
    assert held.replayed_at is None and still.replayed_at is not None  # it was tried, and says when
    assert await count(clean_db, "select count(*) from refund") == 0

    async with Lander.open(clean_db) as lander:
        await lander.land(normalize_trades([top_trade(7701)]))
    report = await replay_quarantine(clean_db, settings, channel="tmall")
    assert (report.attempted, report.resolved, report.still_failing) == (1, 1, 0)
    assert await list_quarantine(clean_db, channel="tmall") == []
    assert await count(clean_db, "select count(*) from refund r join orders o on o.id = r.order_id "
                       "where r.external_id = 'R-77' and o.external_id = '7701'") == 1  # fmt: skip


async def test_replay_of_chosen_rows_in_small_chunks_counts_per_channel(settings_for, clean_db):
    settings = settings_for("http://127.0.0.1:9")
    async with Lander.open(clean_db) as lander:
        # Two refunds before their orders, a trade with a fraction of a fen, and a JD order with a bad amount.
        await lander.land(normalize_refunds([_refund("R-1", 7801), _refund("R-2", 7802)]))
        await lander.land(normalize_trades([top_trade(7803, price="19.999")]))
        await lander.land(normalize_trades([top_trade(7803, price="19.999")]))  # seen twice
        await lander.land(normalize_jd_orders([jd_order(7804, orderPayment="12.3O")]))
        await lander.land(normalize_trades([top_trade(7801)]))  # R-1 can land now, R-2 cannot
    held = {(r.channel, r.external_id): r.id for r in await list_quarantine(clean_db)}
    assert set(held) == {("tmall", "R-1"), ("tmall", "R-2"), ("tmall", "7803"), ("jd", "7804")}
    assert await count_open(clean_db) == {"tmall": 3, "jd": 1}

    chosen = [held["tmall", "R-1"], held["tmall", "R-2"], held["jd", "7804"]]
    report = await replay_quarantine(clean_db, settings, ids=chosen, chunk=1)  # one row per read
    assert (report.attempted, report.resolved, report.still_failing) == (3, 1, 2)
    assert report.by_channel == {
        "tmall": {"attempted": 2, "resolved": 1},
        "jd": {"attempted": 1, "resolved": 0},
    }
    still = {(r.channel, r.external_id): r for r in await list_quarantine(clean_db)}
    assert set(still) == {("tmall", "R-2"), ("tmall", "7803"), ("jd", "7804")}
    assert still["tmall", "7803"].replayed_at is None  # not chosen: not replayed
    assert still["tmall", "7803"].seen_count == 2 and still["jd", "7804"].seen_count == 1
    assert still["tmall", "7803"].first_seen_at <= still["tmall", "7803"].last_seen_at
    assert still["jd", "7804"].replayed_at is not None
    assert await count_open(clean_db) == {"tmall": 2, "jd": 1}
    # A row still failing keeps the field errors of this replay; the resolved one is listed with --all.
    errors = await count(
        clean_db, "select jsonb_array_length(errors) from quarantine where external_id = '7804'"
    )
    assert errors >= 1
    everything = await list_quarantine(clean_db, include_resolved=True)
    assert [r.external_id for r in everything if r.resolved_at is not None] == ["R-1"]


async def test_rows_of_an_entity_replay_cannot_read_are_left_for_later(settings_for, clean_db):
    # A row of an entity the connector has no normalizer for (written by an older version) is skipped,
    # and the rows after it in the same read are still replayed.
    async with clean_db.begin() as conn:
        await conn.execute(
            sa.text(
                "insert into quarantine (channel_code, entity, external_id, payload_hash, raw, reason, errors, seen_count)"
                " values ('tmall', 'shop', 's-1', 'h-shop', '{}'::jsonb, 'old', '[]'::jsonb, 1)"
            )
        )
    async with Lander.open(clean_db) as lander:
        await lander.land(normalize_refunds([_refund("R-9", 7901)]))
        await lander.land(normalize_trades([top_trade(7901)]))
    report = await replay_quarantine(clean_db, settings_for("http://127.0.0.1:9"))
    assert (report.attempted, report.resolved) == (1, 1)
    assert [(r.entity, r.external_id) for r in await list_quarantine(clean_db)] == [("shop", "s-1")]
