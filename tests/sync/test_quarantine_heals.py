"""Quarantine that heals: dependents attach once their parent lands (a refund after its trade, the orders of a
member after the member), rows the channel sent malformed are read again from the channel, and every reason an
entry was held for is kept."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from typer.testing import CliRunner

from api.cli import app as cli
from infra import db as infra_db
from sync.connectors.taobao import normalize_trades
from sync.landing import Lander
from sync.quarantine import heal, replay_quarantine
from tests.conftest import fetch_rows
from tests.sync.conftest import count, run, sim_post
from tests.sync.factories import top_trade


def _json(value: Any) -> Any:
    return value if not isinstance(value, str) else orjson.loads(value)


async def test_a_refund_held_for_its_trade_lands_in_the_run_that_lands_the_trade(sim, settings_for, clean_db):
    settings = settings_for(sim)
    # Refunds read before their trades (a trades pull that failed, a refund feed that runs ahead).
    first = await run(clean_db, settings, "tmall", streams=("refunds",))
    held = await fetch_rows(
        clean_db,
        "select id, external_id from quarantine where entity = 'refund' and resolved_at is null "
        'and errors @> \'[{"type": "missing_order"}]\'',
    )
    assert held and first["refunds"]["quarantined"] == len(held)
    assert await count(clean_db, "select count(*) from refund") == 0

    # The next run lands the trades, and its heal step the refunds waiting for them: nobody replays by hand.
    second = await run(clean_db, settings, "tmall", streams=("trades",))
    assert second["_heal"].refunds_resolved == len(held)
    landed = {
        r[0] for r in await fetch_rows(clean_db, "select external_id from refund where order_id is not null")
    }
    assert landed == {ext for _, ext in held}
    assert (
        await count(
            clean_db, "select count(*) from quarantine where entity = 'refund' and resolved_at is null"
        )
        == 0
    )

    # Healing is done once: a later run finds nothing waiting.
    third = await run(clean_db, settings, "tmall", streams=("trades",))
    assert third["_heal"].refunds_replayed == 0


async def test_orders_of_a_member_sent_malformed_attach_after_the_member_is_refetched(
    sim, settings_for, clean_db
):
    base = settings_for(sim)
    settings = base.model_copy(update={"app": base.app.model_copy(update={"page_size": 10})})
    # The member API breaks the first member of every page (a mobile of letters): the channel's fault, so
    # re-validating the stored payload can never heal them; reading them again can.
    await sim_post(
        sim, "/_sim/faults", {"path_prefix": "/app/api/v1/members", "kind": "malformed", "count": 10_000}
    )
    await run(clean_db, settings, "app", streams=("members",))
    async with httpx.AsyncClient() as client:
        await client.delete(sim + "/_sim/faults")
    await run(clean_db, settings, "app", streams=("orders",))

    members = await fetch_rows(
        clean_db,
        "select id, external_id, retry, refetch, history from quarantine "
        "where entity = 'customer' and resolved_at is null",
    )
    assert len(members) >= 5
    for _, _, retry, refetch, history in members:
        assert retry == "refetch" and _json(refetch)["stream"] == "members"
        assert len(_json(history)) == 1 and "mobile" in _json(history)[0]["reason"]
    held_members = {ext for _, ext, *_ in members}
    detached = await fetch_rows(
        clean_db,
        "select o.external_id from orders o join quarantine q on q.channel_code = o.channel_code "
        'and q.external_id = o.external_id and q.errors @> \'[{"type": "missing_member"}]\' '
        "where o.source_identity_id is null and q.raw ->> 'member' = any(:m)",
        m=sorted(held_members),
    )
    assert detached, "some held members have app orders, landed without their buyer"
    # Re-validation alone cannot heal them: the payload itself is bad.
    again = await replay_quarantine(clean_db, settings, channel="app")
    assert again.resolved == 0

    await infra_db.dispose_engine()
    runner = CliRunner()
    done = await asyncio.to_thread(
        runner.invoke, cli, ["sync", "replay", "--channel", "app", "--base-url", sim, "--simulator"]
    )
    assert done.exit_code == 0, done.output
    assert f"re-fetched {len(members)} from the channel (app.members): {len(members)} resolved" in done.output
    assert f"{len(detached)} orders attached to their buyer" in done.output.replace("\n", " ")

    landed = await fetch_rows(
        clean_db,
        "select external_id, customer_id from source_identity where channel_code = 'app' and external_id = any(:m)",
        m=sorted(held_members),
    )
    assert {r[0] for r in landed} == held_members and all(r[1] is not None for r in landed)
    # Every order of those members now has its buyer and the buyer's customer.
    assert await count(
        clean_db,
        "select count(*) from orders o left join source_identity si on si.id = o.source_identity_id "
        "where o.external_id = any(:o) and (si.id is null or o.customer_id is distinct from si.customer_id "
        "or o.customer_id is null)",
        o=[r[0] for r in detached],
    ) == 0  # fmt: skip
    history = await fetch_rows(clean_db, "select history from quarantine where id = any(:ids)",
                               ids=[r[0] for r in members])  # fmt: skip
    for (h,) in history:
        reasons = [e["reason"] for e in _json(h)]
        assert "mobile" in reasons[0] and reasons[-1] == "re-fetched from the channel"
    assert (
        await count(
            clean_db, "select count(*) from quarantine where channel_code = 'app' and resolved_at is null"
        )
        == 0
    )


async def test_a_replay_that_fails_again_keeps_every_reason(clean_db, settings_for, sim):
    settings = settings_for(sim)
    async with Lander.open(clean_db) as lander:
        await lander.land(normalize_trades([{**top_trade(8801), "payment": "12.3O"}]))
    (entry_id,) = (await fetch_rows(clean_db, "select id from quarantine where external_id = '8801'"))[0]

    # An operator's fix that is wrong in another field: the replay fails for a new reason, kept after the first.
    async with clean_db.begin() as conn:
        await conn.execute(
            sa.text(
                "update quarantine set raw = raw || jsonb_build_object('payment', '398.00', 'created', 'yesterday') "
                "where id = :id"
            ),
            {"id": entry_id},
        )
    failed = await replay_quarantine(clean_db, settings, ids=[entry_id])
    assert failed.still_failing == 1
    ((reason, history),) = await fetch_rows(
        clean_db, "select reason, history from quarantine where id = :i", i=entry_id
    )
    reasons = [e["reason"] for e in _json(history)]
    assert len(reasons) == 2 and "payment" in reasons[0] and "created" in reasons[1] and reason == reasons[1]

    # The same failure again adds nothing; the right fix resolves it and the history stays.
    await replay_quarantine(clean_db, settings, ids=[entry_id])
    async with clean_db.begin() as conn:
        await conn.execute(
            sa.text("update quarantine set raw = raw || jsonb_build_object('created', '2026-10-01 09:00:00') "
                    "where id = :id"),
            {"id": entry_id},
        )  # fmt: skip
    fixed = await replay_quarantine(clean_db, settings, ids=[entry_id])
    assert fixed.resolved == 1
    ((history,),) = await fetch_rows(clean_db, "select history from quarantine where id = :i", i=entry_id)
    assert [e["reason"] for e in _json(history)] == reasons
    assert await count(clean_db, "select count(*) from orders where external_id = '8801'") == 1
    assert (await heal(clean_db, settings)).orders_attached == 0
