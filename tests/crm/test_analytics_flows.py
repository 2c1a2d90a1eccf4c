"""Analytics in real Prefect flow runs: a channel's sync measures the customers it touched through the
recompute hook, and analytics-daily measures everyone, groups the simulator's shared addresses into
households, and changes nothing more when run again."""

from __future__ import annotations

from tests.sync.conftest import clean_db, count, prefect_db, prefect_server, sim  # noqa: F401 - fixtures

ACTIVE_UNMEASURED = (
    "select count(*) from golden_customer g where g.status = 'active'"
    " and not exists (select 1 from customer_metrics m where m.customer_id = g.id)"
)


async def test_sync_hook_and_daily_flow(sim, prefect_db, clean_db):  # noqa: F811 - fixtures
    from crm.analytics.flows import analytics_daily
    from sync.flows import sync_app, sync_tmall

    async with prefect_server(prefect_db):
        for flow in (sync_tmall, sync_app):
            state = await flow(base_url=sim, simulator=True, return_state=True)
            assert state.is_completed(), state
        # The hook measured every customer the syncs touched: everyone who bought has measures.
        assert (
            await count(
                clean_db,
                "select count(distinct o.customer_id) from orders o where o.status <> 'cancelled'"
                " and not exists (select 1 from customer_metrics m where m.customer_id = o.customer_id)",
            )
            == 0
        )
        daily = await analytics_daily(return_state=True)
        assert daily.is_completed(), daily
        counts = await daily.result()  # type: ignore[misc]
        assert set(counts["seconds"]) >= {"measures", "clv", "households", "tags", "segments"}
        again = await analytics_daily(return_state=True)
        assert again.is_completed(), again
        assert (await again.result())["lifecycle_changes"] == 0  # type: ignore[misc]
    assert await count(clean_db, ACTIVE_UNMEASURED) == 0
    assert (
        await count(
            clean_db, "select count(*) from customer_metrics where order_count > 0 and rfm_cell is null"
        )
        == 0
    )
    assert (
        await count(
            clean_db,
            "select count(*) from customer_metrics where order_count > 0 and clv_predicted_fen is null",
        )
        == 0
    )
    # About 12% of the simulator's neighbouring people share a flat: households appear, never merges.
    assert await count(clean_db, "select count(*) from household where status = 'auto'") > 0
    assert await count(clean_db, "select count(*) from customer_tag where source = 'system'") > 0
