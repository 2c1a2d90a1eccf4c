"""Per-customer measures, RFM, value tier, ABC and lifecycle as set-based SQL: a constant number of
statements for any number of customers (docs/analytics.md).

A run measures its customers into a temporary table, then (full runs only) fits what is fitted over the
whole base (RFM quintile cut points, ABC spend thresholds, stored in analytics_model), scores the measured
customers against the stored figures, writes the lifecycle changes to lifecycle_history and upserts
customer_metrics. An incremental run for the customers a sync touched scores them against the cut points of
the last full run, so their RFM scores mean what everyone else's mean.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.config import AnalyticsConfig

# The customers a step covers: every customer, or the given ids.
SCOPE = "(cast(:all_customers as boolean) or {col} = any(cast(:ids as bigint[])))"
QUINTILES = [0.2, 0.4, 0.6, 0.8]


def scope_params(customer_ids: set[int] | None) -> dict[str, Any]:
    return {"all_customers": customer_ids is None, "ids": sorted(customer_ids or ())}


def _city_tiers(config: AnalyticsConfig) -> tuple[list[str], list[str]]:
    cities, tiers = [], []
    for tier, names in config.portrait.city_tiers.items():
        for name in names:
            cities.append(name.removesuffix("市") or name)
            tiers.append(tier)
    return cities, tiers


MEASURE_SQL = """
create temp table _analytics_measures on commit drop as
with scope as (
    select g.id, g.created_at, g.birth_date, g.city from golden_customer g
    where g.status = 'active' and {scope}
), counted as (
    select o.id, o.customer_id, o.channel_code, o.store_id, o.placed_at, o.paid_fen, o.status, o.discount_fen
    from orders o join scope s on s.id = o.customer_id
    where o.status = any(cast(:counted as text[]))
), refunds as (
    select r.order_id, sum(r.amount_fen) as fen from refund r join counted c on c.id = r.order_id
    where r.status = any(cast(:refund_statuses as text[])) group by r.order_id
), couponed as (
    select distinct cp.redeemed_order_id as order_id from coupon cp join counted c on c.id = cp.redeemed_order_id
), o as (
    select c.*, (c.discount_fen > 0 or cp.order_id is not null) as discounted,
           -- A refunded order whose refund rows have not landed is taken as refunded in full.
           case when c.status = 'refunded' and r.fen is null then c.paid_fen
                else least(c.paid_fen, coalesce(r.fen, 0)) end as refunded
    from counted c left join refunds r on r.order_id = c.id left join couponed cp on cp.order_id = c.id
), kept as (
    -- Orders refunded in full are not purchases: they count in neither frequency nor recency.
    select o.*, lag(o.placed_at) over (partition by o.customer_id order by o.placed_at, o.id) as prev
    from o where not (o.paid_fen > 0 and o.refunded >= o.paid_fen)
), money as (
    select customer_id, sum(paid_fen)::bigint as total, sum(refunded)::bigint as refunded from o group by customer_id
), counts as (
    select customer_id, count(*) as n, min(placed_at) as first_at, max(placed_at) as last_at,
           count(*) filter (where discounted) as disc,
           mode() within group (order by channel_code) as pref_channel,
           mode() within group (order by store_id) as pref_store,
           array_agg(distinct channel_code order by channel_code) as order_channels,
           max(placed_at) filter (where prev < placed_at - make_interval(days => :churn_days)) as returned_at,
           max(placed_at) filter (where prev < placed_at - make_interval(days => :active_days)) as reactivated_at
    from kept group by customer_id
), cats as (
    select k.customer_id, p.category, sum(l.amount_fen) as amount
    from kept k join order_line l on l.order_id = k.id join product p on p.id = l.product_id
    where p.category is not null group by k.customer_id, p.category
), catagg as (
    select customer_id, array_agg(category order by category) as cats,
           (array_agg(category order by amount desc, category))[1] as pref
    from cats group by customer_id
), chans as (
    select si.customer_id, array_agg(distinct si.channel_code order by si.channel_code) as ch
    from source_identity si join scope s on s.id = si.customer_id group by si.customer_id
), tiers as (
    select * from unnest(cast(:tier_cities as text[]), cast(:tier_names as text[])) as t(city, tier)
), staged as (
    select s.id as customer_id, s.created_at,
           coalesce(c.n, 0) as order_count,
           coalesce(mo.total, 0) as total_spent_fen, coalesce(mo.refunded, 0) as refunded_fen,
           c.first_at, c.last_at, c.returned_at, c.reactivated_at, c.pref_channel, c.pref_store,
           c.order_channels, c.disc, ca.pref as pref_category, ca.cats, ch.ch,
           case when s.birth_date is not null then
               (cast(:band_names as text[]))[1 + width_bucket(
                   extract(year from age(cast(:today as date), s.birth_date))::int, cast(:band_edges as int[]))]
           end as age_band,
           ct.tier as city_tier
    from scope s
    left join counts c on c.customer_id = s.id
    left join money mo on mo.customer_id = s.id
    left join catagg ca on ca.customer_id = s.id
    left join chans ch on ch.customer_id = s.id
    left join tiers ct on ct.city = regexp_replace(s.city, '市$', '')
), staged2 as (
    select st.*,
           case when st.order_count = 0 then 'potential'
                when st.first_at >= cast(:now as timestamptz) - make_interval(days => :new_days) then 'new'
                when st.returned_at >= cast(:now as timestamptz) - make_interval(days => :won_back_days) then 'won_back'
                when st.last_at >= cast(:now as timestamptz) - make_interval(days => :active_days) then 'active'
                when st.last_at >= cast(:now as timestamptz) - make_interval(days => :churn_days) then 'at_risk'
                else 'churned' end as stage
    from staged st
)
select customer_id, order_count, total_spent_fen, refunded_fen,
       total_spent_fen - refunded_fen as net_spent_fen,
       case when order_count > 0 then round((total_spent_fen - refunded_fen)::numeric / order_count)::bigint
            else 0 end as average_order_value_fen,
       -- Orders per year over the customer's tenure, counted as at least a year.
       case when order_count > 0 then
            order_count * 365.0 / greatest(extract(epoch from (cast(:now as timestamptz) - first_at)) / 86400.0, 365) end
           as purchase_frequency,
       first_at as first_order_at, last_at as last_order_at,
       pref_channel as preferred_channel, pref_store as preferred_store_id, pref_category as preferred_category,
       coalesce(ch, '{{}}') as channels, coalesce(order_channels, '{{}}') as order_channels,
       coalesce(cats, '{{}}') as categories, coalesce(disc, 0) as discounted_orders,
       case when order_count > 0 then coalesce(disc, 0)::float8 / order_count end as price_sensitivity,
       age_band, city_tier,
       case when order_count > 0 then floor(extract(epoch from (cast(:now as timestamptz) - last_at)) / 86400)::int end as recency_days,
       stage as lifecycle_stage,
       -- When the stage began, from the order history (not from when a run noticed it), never after now.
       least(cast(:now as timestamptz), case stage
           when 'potential' then created_at
           when 'new' then first_at
           when 'won_back' then returned_at
           when 'active' then greatest(first_at + make_interval(days => :new_days),
                                       coalesce(returned_at + make_interval(days => :won_back_days), first_at),
                                       coalesce(reactivated_at, first_at))
           when 'at_risk' then last_at + make_interval(days => :active_days)
           else last_at + make_interval(days => :churn_days) end) as lifecycle_since
from staged2
"""

FIT_RFM_SQL = """
select percentile_cont(cast(:q as float8[])) within group (order by recency_days) as r,
       percentile_cont(cast(:q as float8[])) within group (order by order_count) as f,
       percentile_cont(cast(:q as float8[])) within group (order by net_spent_fen) as m,
       count(*) as n
from {source} where order_count > 0
"""

FIT_ABC_SQL = """
with ranked as (
    select net_spent_fen,
           sum(net_spent_fen) over (order by net_spent_fen desc, customer_id rows unbounded preceding)
               - net_spent_fen as before,
           sum(net_spent_fen) over () as total
    from {source} where order_count > 0
)
select min(net_spent_fen) filter (where before < :a * total) as a_min,
       min(net_spent_fen) filter (where before < :b * total) as b_min, count(*) as n
from ranked
"""


async def _fit(
    conn: AsyncConnection, config: AnalyticsConfig, source: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    r = (await conn.execute(sa.text(FIT_RFM_SQL.format(source=source)), {"q": QUINTILES})).mappings().one()
    rfm = {
        "recency_days": r["r"] or [],
        "frequency": r["f"] or [],
        "monetary_fen": r["m"] or [],
        "customers": r["n"],
    }
    a = (
        (
            await conn.execute(
                sa.text(FIT_ABC_SQL.format(source=source)), {"a": config.abc.a_share, "b": config.abc.b_share}
            )
        )
        .mappings()
        .one()
    )
    abc = {"a_min_fen": a["a_min"], "b_min_fen": a["b_min"], "customers": a["n"]}
    return rfm, abc


async def _store_model(
    conn: AsyncConnection, kind: str, params: dict[str, Any], config: AnalyticsConfig, now: datetime
) -> None:
    await conn.execute(
        sa.text(
            "insert into analytics_model (kind, fitted_at, customers, rule_version, parameters)"
            " values (:k, :now, :n, :v, cast(:p as jsonb)) on conflict (kind) do update set"
            " fitted_at = excluded.fitted_at, customers = excluded.customers,"
            " rule_version = excluded.rule_version, parameters = excluded.parameters"
        ),
        {
            "k": kind,
            "now": now,
            "n": int(params.get("customers") or 0),
            "v": config.version,
            "p": json.dumps(params),
        },
    )


async def stored_model(conn: AsyncConnection, kind: str) -> dict[str, Any] | None:
    found = (
        await conn.execute(
            sa.text("select parameters, fitted_at from analytics_model where kind = :k"), {"k": kind}
        )
    ).first()
    if found is None:
        return None
    return {**found[0], "fitted_at": found[1].isoformat()}


def _cell_case(config: AnalyticsConfig, params: dict[str, Any]) -> str:
    """The RFM cell as a CASE: the no-purchase cell, else the first configured cell whose bound ranges match."""
    params["cnp"] = config.rfm.no_purchase.code
    arms = ["when order_count = 0 then :cnp"]
    for n, c in enumerate(config.rfm.cells):
        params.update(
            {f"c{n}r0": c.r[0], f"c{n}r1": c.r[1], f"c{n}f0": c.f[0], f"c{n}f1": c.f[1], f"c{n}": c.code}
        )
        arms.append(f"when r between :c{n}r0 and :c{n}r1 and f between :c{n}f0 and :c{n}f1 then :c{n}")
    return "case " + " ".join(arms) + " end"


SCORED_SQL = """
create temp table _analytics_scored on commit drop as
with s as (
    select t.*,
           case when t.order_count > 0 then
               1 + (select count(*) from unnest(cast(:rcuts as float8[])) c where c > t.recency_days) end as r,
           case when t.order_count > 0 then
               1 + (select count(*) from unnest(cast(:fcuts as float8[])) c where c < t.order_count) end as f,
           case when t.order_count > 0 then
               1 + (select count(*) from unnest(cast(:mcuts as float8[])) c where c < t.net_spent_fen) end as mm
    from _analytics_measures t
)
select s.*, {cell} as rfm_cell,
       case when s.order_count = 0 then null
            when s.net_spent_fen >= :high_fen then 'high' when s.net_spent_fen >= :mid_fen then 'mid'
            else 'low' end as value_tier,
       case when s.order_count = 0 then null
            when s.net_spent_fen >= :a_min then 'A' when s.net_spent_fen >= :b_min then 'B'
            else 'C' end as abc_class
from s
"""

COLUMNS = (
    "order_count, total_spent_fen, refunded_fen, net_spent_fen, average_order_value_fen, purchase_frequency,"
    " first_order_at, last_order_at, preferred_channel, preferred_store_id, preferred_category, channels,"
    " order_channels, categories, discounted_orders, price_sensitivity, age_band, city_tier, recency_days,"
    " r_score, f_score, m_score, rfm_cell, value_tier, abc_class, lifecycle_stage, lifecycle_since,"
    " clv_historical_fen, computed_at"
)
SELECT_SCORED = (
    "order_count, total_spent_fen, refunded_fen, net_spent_fen, average_order_value_fen, purchase_frequency,"
    " first_order_at, last_order_at, preferred_channel, preferred_store_id, preferred_category, channels,"
    " order_channels, categories, discounted_orders, price_sensitivity, age_band, city_tier, recency_days,"
    " r, f, mm, rfm_cell, value_tier, abc_class, lifecycle_stage, lifecycle_since,"
    " net_spent_fen, cast(:now as timestamptz)"
)


async def measure(
    conn: AsyncConnection, config: AnalyticsConfig, customer_ids: set[int] | None, now: datetime
) -> dict[str, int]:
    """Measures, scores and lifecycle for the customers (None: every active customer); returns counts."""
    from zoneinfo import ZoneInfo

    lc = config.lifecycle
    cities, tiers = _city_tiers(config)
    scope = scope_params(customer_ids)
    await conn.execute(sa.text("drop table if exists _analytics_measures, _analytics_scored"))
    await conn.execute(
        sa.text(MEASURE_SQL.format(scope=SCOPE.format(col="g.id"))),
        {
            **scope,
            "now": now,
            "today": now.astimezone(ZoneInfo(config.timezone)).date(),
            "counted": config.orders.counted_statuses,
            "refund_statuses": config.orders.refund_statuses,
            "new_days": lc.new_days,
            "active_days": lc.active_days,
            "churn_days": lc.churn_days,
            "won_back_days": lc.won_back_days,
            "band_names": config.portrait.band_names(),
            "band_edges": config.portrait.age_bands,
            "tier_cities": cities,
            "tier_names": tiers,
        },
    )
    await conn.execute(sa.text("analyze _analytics_measures"))
    rfm = await stored_model(conn, "rfm")
    abc = await stored_model(conn, "abc")
    if customer_ids is None or rfm is None or abc is None:
        # A full run fits over the whole base; an incremental run before any full run fits over what it has
        # (and does not store it: the first full run does).
        rfm, abc = await _fit(conn, config, "_analytics_measures")
        if customer_ids is None:
            await _store_model(conn, "rfm", rfm, config, now)
            await _store_model(conn, "abc", abc, config, now)
    params: dict[str, Any] = {
        "rcuts": rfm["recency_days"],
        "fcuts": rfm["frequency"],
        "mcuts": rfm["monetary_fen"],
        "high_fen": config.value_tier.high_min_yuan * 100,
        "mid_fen": config.value_tier.mid_min_yuan * 100,
        "a_min": abc["a_min_fen"] if abc["a_min_fen"] is not None else 0,
        "b_min": abc["b_min_fen"] if abc["b_min_fen"] is not None else 0,
    }
    cell = _cell_case(config, params)
    await conn.execute(sa.text(SCORED_SQL.format(cell=cell)), params)
    # Stage changes first, while customer_metrics still holds the stage before this run.
    since = "greatest(t.lifecycle_since, coalesce(m.lifecycle_since, t.lifecycle_since))"
    await conn.execute(
        sa.text(
            f"update lifecycle_history h set ended_at = {since}"  # noqa: S608 - fixed fragments
            " from _analytics_scored t join customer_metrics m on m.customer_id = t.customer_id"
            " where h.customer_id = t.customer_id and h.ended_at is null and m.lifecycle_stage <> t.lifecycle_stage"
        )
    )
    changed = await conn.execute(
        sa.text(
            "insert into lifecycle_history (customer_id, stage, from_stage, started_at, rule_version)"  # noqa: S608
            f" select t.customer_id, t.lifecycle_stage, m.lifecycle_stage, {since}, :v"
            " from _analytics_scored t left join customer_metrics m on m.customer_id = t.customer_id"
            " where m.lifecycle_stage is distinct from t.lifecycle_stage"
        ),
        {"v": config.version},
    )
    updates = ", ".join(
        f"{c.strip()} = excluded.{c.strip()}" for c in COLUMNS.split(",") if c.strip() != "lifecycle_since"
    )
    upserted = await conn.execute(
        sa.text(
            f"insert into customer_metrics (customer_id, {COLUMNS})"  # noqa: S608 - fixed fragments
            f" select customer_id, {SELECT_SCORED} from _analytics_scored"
            f" on conflict (customer_id) do update set {updates},"
            " lifecycle_since = case when customer_metrics.lifecycle_stage = excluded.lifecycle_stage"
            " then customer_metrics.lifecycle_since else excluded.lifecycle_since end"
        ),
        {"now": now},
    )
    # Customers merged away or erased keep no measures.
    await conn.execute(
        sa.text(
            f"delete from customer_metrics x where {SCOPE.format(col='x.customer_id')}"  # noqa: S608
            " and not exists (select 1 from golden_customer g where g.id = x.customer_id and g.status = 'active')"
        ),
        scope,
    )
    await conn.execute(sa.text("drop table if exists _analytics_measures, _analytics_scored"))
    return {"measured": upserted.rowcount or 0, "lifecycle_changes": changed.rowcount or 0}
