"""Households: golden customers who share a normalized delivery address or a family phone, as set-based SQL.

A household relates customers and never merges them. Evidence per customer (household_evidence) is a hash
of each normalized address and phone their identities and golden record carry, so no PII is copied and an
incremental run regroups only the keys its customers had or have. Not evidence of a family:
- an address that normalizes to a store's own (a cashier typing the shop's address for a walk-in);
- an address or phone shared by more customers than `households.max_members` (a locker, an office, a
  shop's phone).
Staff decisions stand: a confirmed household is not regrouped, a dissolved one ('split') stays empty, and a
member split off (`excluded`) is not put back.

Role guess: the member with the most purchases is the `orderer`; members with none are `recipient`s (they
are known from deliveries and profiles, not from buying); the rest are `member`s.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.analytics.config import AnalyticsConfig
from crm.analytics.measures import SCOPE, scope_params

# Full-width to half-width (NFKC), lower case, no spaces or punctuation: "上海市 徐汇区 漕溪北路 88号" and
# "上海市徐汇区漕溪北路８８号" are one address.
NORMALIZED = (
    "lower(regexp_replace(normalize(concat_ws('', {province}, {city}, {district}, {detail}), NFKC),"
    " '[[:space:][:punct:]，。、·（）【】《》—－]+', '', 'g'))"
)
HASHED = "encode(sha256(convert_to({value}, 'UTF8')), 'hex')"
# At least this many characters of street address: a city alone is not a shared home.
MIN_DETAIL = 4


def _address(alias: str, detail: str) -> str:
    return NORMALIZED.format(
        province=f"{alias}.province",
        city=f"{alias}.city",
        district=f"{alias}.district",
        detail=f"{alias}.{detail}",
    )


EVIDENCE_SQL = f"""
insert into household_evidence (key_kind, key, customer_id)
with scope as (select id from golden_customer g where g.status = 'active' and {SCOPE.format(col="g.id")}),
addresses as (
    select si.customer_id, {_address("si", "address_detail")} as norm
    from source_identity si join scope s on s.id = si.customer_id
    where char_length(coalesce(si.address_detail, '')) >= {MIN_DETAIL}
    union
    select g.id, {_address("g", "address")} from golden_customer g join scope s on s.id = g.id
    where char_length(coalesce(g.address, '')) >= {MIN_DETAIL}
), stores as (
    select {_address("st", "address")} as norm from store st
    where cast(:exclude_stores as boolean) and char_length(coalesce(st.address, '')) >= {MIN_DETAIL}
), phones as (
    select si.customer_id, si.phone from source_identity si join scope s on s.id = si.customer_id
    where si.phone is not null
    union
    select g.id, g.phone from golden_customer g join scope s on s.id = g.id where g.phone is not null
)
select distinct 'address', {HASHED.format(value="a.norm")}, a.customer_id from addresses a
where not exists (select 1 from stores st where st.norm = a.norm)
union
select distinct 'phone', {HASHED.format(value="p.phone")}, p.customer_id from phones p
on conflict do nothing
"""  # noqa: S608 - fixed fragments


async def group(
    conn: AsyncConnection, config: AnalyticsConfig, customer_ids: set[int] | None, now: datetime
) -> int:
    """Households for the customers (None: all); returns households holding members after the run."""
    scope = scope_params(customer_ids)
    await conn.execute(sa.text("drop table if exists _household_keys"))
    # Keys the customers had (evidence and memberships) before this run...
    await conn.execute(
        sa.text(
            "create temp table _household_keys on commit drop as"  # noqa: S608 - fixed fragments
            " select key_kind, key from household_evidence e"
            f" where {SCOPE.format(col='e.customer_id')}"
            " union select h.key_kind, h.key from household h join household_member hm on hm.household_id = h.id"
            f" where {SCOPE.format(col='hm.customer_id')}"
        ),
        scope,
    )
    await conn.execute(
        sa.text(f"delete from household_evidence e where {SCOPE.format(col='e.customer_id')}"),  # noqa: S608
        scope,
    )
    await conn.execute(
        sa.text(EVIDENCE_SQL), {**scope, "exclude_stores": config.households.exclude_store_addresses}
    )
    # ...and the keys they have now.
    await conn.execute(
        sa.text(
            "insert into _household_keys select key_kind, key from household_evidence e"  # noqa: S608
            f" where {SCOPE.format(col='e.customer_id')}"
        ),
        scope,
    )
    await conn.execute(sa.text("drop table if exists _household_groups"))
    await conn.execute(
        sa.text(
            "create temp table _household_groups on commit drop as"
            " select e.key_kind, e.key, e.customer_id from household_evidence e"
            " join (select distinct key_kind, key from _household_keys) k on k.key_kind = e.key_kind and k.key = e.key"
            " join golden_customer g on g.id = e.customer_id and g.status = 'active'"
        )
    )
    await conn.execute(
        sa.text(
            "delete from _household_groups x using (select key_kind, key from _household_groups group by 1, 2"
            " having count(*) < 2 or count(*) > :max) bad where bad.key_kind = x.key_kind and bad.key = x.key"
        ),
        {"max": config.households.max_members},
    )
    await conn.execute(
        sa.text(
            "insert into household (key_kind, key, status, created_at, updated_at)"
            " select distinct key_kind, key, 'auto', cast(:now as timestamptz), cast(:now as timestamptz) from _household_groups"
            " on conflict (key_kind, key) do nothing"
        ),
        {"now": now},
    )
    # Automatic households of the touched keys: members who no longer share the key leave (unless staff
    # split them off, which is kept), new ones join, roles are guessed again.
    await conn.execute(
        sa.text(
            "delete from household_member hm using household h, _household_keys k"
            " where h.id = hm.household_id and h.status = 'auto' and k.key_kind = h.key_kind and k.key = h.key"
            " and not hm.excluded and not exists (select 1 from _household_groups x"
            " where x.key_kind = h.key_kind and x.key = h.key and x.customer_id = hm.customer_id)"
        )
    )
    await conn.execute(
        sa.text(
            "insert into household_member (household_id, customer_id, role, joined_at)"
            " select h.id, x.customer_id, 'member', cast(:now as timestamptz) from _household_groups x"
            " join household h on h.key_kind = x.key_kind and h.key = x.key where h.status = 'auto'"
            " on conflict (household_id, customer_id) do nothing"
        ),
        {"now": now},
    )
    await conn.execute(
        sa.text(
            """
update household_member hm set role = r.role
from (
    select hm.household_id, hm.customer_id,
           case when coalesce(m.order_count, 0) = 0 then 'recipient'
                when row_number() over (partition by hm.household_id
                                        order by coalesce(m.order_count, 0) desc, hm.customer_id) = 1 then 'orderer'
                else 'member' end as role
    from household_member hm join household h on h.id = hm.household_id
    join (select distinct key_kind, key from _household_keys) k on k.key_kind = h.key_kind and k.key = h.key
    left join customer_metrics m on m.customer_id = hm.customer_id
    where h.status = 'auto' and not hm.excluded
) r
where r.household_id = hm.household_id and r.customer_id = hm.customer_id and r.role <> hm.role
"""
        )
    )
    # An automatic household left with fewer than two members is no household.
    await conn.execute(
        sa.text(
            "delete from household h using _household_keys k where k.key_kind = h.key_kind and k.key = h.key"
            " and h.status = 'auto' and (select count(*) from household_member hm"
            " where hm.household_id = h.id and not hm.excluded) < 2"
        )
    )
    held = (
        await conn.execute(
            sa.text(
                "select count(distinct h.id) from household h join _household_keys k"
                " on k.key_kind = h.key_kind and k.key = h.key where h.status <> 'split'"
            )
        )
    ).scalar_one()
    await conn.execute(sa.text("drop table if exists _household_keys, _household_groups"))
    return int(held)
