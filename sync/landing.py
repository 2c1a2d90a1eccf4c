"""Batched, idempotent landing of canonical records.

One `Batch` lands in one transaction: COPY into temporary staging tables, then one
`INSERT ... SELECT ... ON CONFLICT (channel_code, external_id) DO UPDATE ... WHERE excluded.source_updated_at
>= target.source_updated_at` per table, order lines written for exactly the orders that were written (an
order new to the table gets its lines in the same statement; an updated one keeps the lines that did not
change and has the others replaced), and the connector's watermark upserted last. A crash before the commit loses the whole batch and the
watermark with it, so the rerun pulls the same rows again and lands them once.

Customer ids: orders, interactions and consents take `customer_id` from their source identity at landing
(when that identity was linked earlier); `sync.identities.propagate_customer_ids` fills in the rest after
linking.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from sync.canonical import (
    ORDER_STATUSES,
    Batch,
    OrderRecord,
    PersonIdentity,
    QuarantinedRow,
    RefundRecord,
)
from sync.constraints import RECORD_ENTITY_PREFIX, TimeBounds, check_batch, record_payload
from sync.identities import IDENTITY_COLUMNS, standardize_identities
from sync.suppression import drop_erased, load_erased

log = logging.getLogger(__name__)

CHANNEL_FAMILIES: dict[str, tuple[str, str, int]] = {
    # code: (family, name, trust_rank: lower wins in survivorship)
    "app": ("own", "Official app / site / mini-program", 10),
    "pos": ("pos", "Store POS", 20),
    "wechat": ("social", "WeChat official account", 30),
    "tmall": ("marketplace", "Tmall / Taobao", 50),
    "jd": ("marketplace", "JD", 50),
    "weibo": ("social", "Weibo", 60),
}

# customer_id: set by the API's recordInteractions (channels without a connector name the customer, not
# an identity); sync leaves it null and the customer comes from the identity.
STAGE_INTERACTION_DDL = """create temp table if not exists stage_interaction (
        channel_code text, external_id text, identity_external_id text, type text, direction text,
        occurred_at timestamptz, summary text, payload jsonb, customer_id bigint
    ) on commit delete rows"""

STAGING_DDL = (
    """create temp table if not exists stage_identities (
        channel_code text, external_id text, raw bytea, source_updated_at timestamptz, stub boolean,
        name text, name_pinyin text, nickname text, phone text, phone_masked text, phone_verified boolean,
        email text, birth_date date, gender text, id_number text, member_no text, wechat_unionid text,
        wechat_openid text, province text, city text, district text, address_detail text, postcode text
    ) on commit delete rows""",
    """create temp table if not exists stage_orders (
        channel_code text, external_id text, identity_external_id text, store_code text, status text,
        source_status text, total_fen bigint, paid_fen bigint, discount_fen bigint, shipping_fen bigint,
        currency text, placed_at timestamptz, paid_at timestamptz, source_updated_at timestamptz,
        cashier_code text, tenders text
    ) on commit delete rows""",
    # Lines name their order by key: they are staged with the orders, before the orders have ids.
    """create temp table if not exists stage_order_lines (
        channel_code text, order_external_id text, line_no int, sku text, title text, quantity int,
        unit_price_fen bigint, discount_fen bigint, amount_fen bigint, external_id text
    ) on commit delete rows""",
    STAGE_INTERACTION_DDL,
)

IDENTITY_STAGE_COLUMNS = (
    "channel_code",
    "external_id",
    "raw",
    "source_updated_at",
    "stub",
    *IDENTITY_COLUMNS,
)
ORDER_STAGE_COLUMNS = (
    "channel_code", "external_id", "identity_external_id", "store_code", "status", "source_status",
    "total_fen", "paid_fen", "discount_fen", "shipping_fen", "currency", "placed_at", "paid_at",
    "source_updated_at", "cashier_code", "tenders",
)  # fmt: skip
LINE_STAGE_COLUMNS = (
    "channel_code", "order_external_id", "line_no", "sku", "title", "quantity", "unit_price_fen", "discount_fen",
    "amount_fen", "external_id",
)  # fmt: skip
INTERACTION_STAGE_COLUMNS = (
    "channel_code", "external_id", "identity_external_id", "type", "direction", "occurred_at", "summary",
    "payload",
)  # fmt: skip

# The standardized attributes in staging column order, read in one C call per identity.
_identity_column_values = itemgetter(*IDENTITY_COLUMNS)


def _identity_values(table: str) -> str:
    return ", ".join(f"{table}.{c}" for c in ("raw", *IDENTITY_COLUMNS))


_identity_updates = ", ".join(f"{c} = excluded.{c}" for c in ("raw", "source_updated_at", *IDENTITY_COLUMNS))
UPSERT_IDENTITIES = f"""
insert into source_identity (channel_code, external_id, raw, source_updated_at, {", ".join(IDENTITY_COLUMNS)})
select channel_code, external_id, convert_from(raw, 'utf8')::jsonb, source_updated_at, {", ".join(IDENTITY_COLUMNS)}
from stage_identities
where not stub
on conflict (channel_code, external_id) do update set {_identity_updates}, updated_at = now()
where (source_identity.source_updated_at is null
       or excluded.source_updated_at is null
       or excluded.source_updated_at >= source_identity.source_updated_at)
  -- The same version saying the same is no write: a rerun leaves the row (and updated_at) as it was.
  and (excluded.source_updated_at is distinct from source_identity.source_updated_at
       or ({_identity_values("source_identity")}) is distinct from ({_identity_values("excluded")}))
returning id
"""  # noqa: S608 - column names are constants

# A repeat version of an identity (a buyer's next order, saying the same about them) moves only its source
# time and the event reference in raw; the rest of the row already holds exactly what a full upsert would
# write. Only where the row is still the version this lander wrote (`previous`): a row another writer changed
# since comes back missing from RETURNING and gets the full upsert, whose guard decides.
TOUCH_IDENTITIES = """
update source_identity si
set source_updated_at = t.source_updated_at, updated_at = now(),
    raw = case when t.event is null then si.raw else si.raw || t.event::jsonb end
from unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[])
     as t(channel_code, external_id, source_updated_at, previous, event)
where si.channel_code = t.channel_code and si.external_id = t.external_id and si.source_updated_at = t.previous
returning si.id, si.channel_code, si.external_id
"""

INSERT_STUB_IDENTITIES = f"""
insert into source_identity (channel_code, external_id, raw, source_updated_at, {", ".join(IDENTITY_COLUMNS)})
select channel_code, external_id, convert_from(raw, 'utf8')::jsonb, source_updated_at, {", ".join(IDENTITY_COLUMNS)}
from stage_identities
where stub
on conflict (channel_code, external_id) do nothing
returning id
"""  # noqa: S608 - column names are constants

# One statement for the orders and the lines of the orders it inserts: `written` is every order this batch
# actually wrote (a stale version is not in it); an order that was not there before (xmax = 0: ON CONFLICT
# DO UPDATE leaves the locking transaction in xmax of the row it updates) has no lines to replace, so its
# lines are inserted here. Orders that were updated come back in `updated` and have their lines reconciled.
# `products` holds only the batch's SKUs: the planner, which cannot see how many lines the CTEs yield, probed
# the product index once per line; a hash of these few rows costs PostgreSQL 4% less per order (landing the
# same 200k Tmall orders both ways, four runs), and stays small however large the catalogue.
# A version that is not newer by the source's time but says something else (the same transaction id in two
# exports with other amounts, a re-sent order rewritten in place) is a conflict, not an update: `conflicts`
# keeps it out of the insert and returns it with the version kept, for quarantine (its staged lines are never
# read: lines are written only for orders in `written`). Only what the channel said counts as content; what
# landing derives (buyer and customer ids, the canonical status) does not.
UPSERT_ORDERS = """
with conflicts as materialized (
    select s.channel_code, s.external_id, to_jsonb(s) as refused,
           to_jsonb(o) - 'id' - 'source_identity_id' - 'customer_id' - 'store_id' - 'landed_at' - 'updated_at' as kept
    from stage_orders s
    join orders o on o.channel_code = s.channel_code and o.external_id = s.external_id
    where s.source_updated_at <= o.source_updated_at
      and (o.source_status, o.total_fen, o.paid_fen, o.discount_fen, o.shipping_fen, o.currency, o.placed_at,
           o.paid_at, o.cashier_code, o.tenders)
          is distinct from
          (s.source_status, s.total_fen, s.paid_fen, s.discount_fen, s.shipping_fen, s.currency, s.placed_at,
           s.paid_at, s.cashier_code, s.tenders::jsonb)
      -- Within one second of the channel's clock (its `modified` has whole seconds) an order can be paid
      -- right after it was placed: the same amounts with a status further on is that progress, not a
      -- conflict. Anything else at the same time (other amounts, a status going back) is one.
      and not (s.source_updated_at = o.source_updated_at
               and array_position(STATUS_ORDER, s.status)
                   > array_position(STATUS_ORDER, o.status)
               and (o.total_fen, o.paid_fen, o.discount_fen, o.shipping_fen, o.currency, o.placed_at,
                    o.cashier_code, o.tenders)
                   is not distinct from
                   (s.total_fen, s.paid_fen, s.discount_fen, s.shipping_fen, s.currency, s.placed_at,
                    s.cashier_code, s.tenders::jsonb))
), written as (
    insert into orders (channel_code, external_id, source_identity_id, customer_id, store_id, status,
                        source_status, total_fen, paid_fen, discount_fen, shipping_fen, currency, placed_at,
                        paid_at, source_updated_at, cashier_code, tenders)
    select s.channel_code, s.external_id, si.id, si.customer_id, st.id, s.status, s.source_status,
           s.total_fen, s.paid_fen, s.discount_fen, s.shipping_fen, s.currency, s.placed_at, s.paid_at,
           s.source_updated_at, s.cashier_code, s.tenders::jsonb
    from stage_orders s
    left join source_identity si on si.channel_code = s.channel_code and si.external_id = s.identity_external_id
    left join store st on st.code = s.store_code
    where not exists (select 1 from conflicts c where c.channel_code = s.channel_code and c.external_id = s.external_id)
    on conflict (channel_code, external_id) do update set
        source_identity_id = excluded.source_identity_id,
        customer_id = coalesce(excluded.customer_id, orders.customer_id),
        store_id = excluded.store_id, status = excluded.status, source_status = excluded.source_status,
        total_fen = excluded.total_fen, paid_fen = excluded.paid_fen, discount_fen = excluded.discount_fen,
        shipping_fen = excluded.shipping_fen, currency = excluded.currency, placed_at = excluded.placed_at,
        paid_at = excluded.paid_at, source_updated_at = excluded.source_updated_at,
        cashier_code = excluded.cashier_code, tenders = excluded.tenders, updated_at = now()
    where (orders.source_updated_at is null or excluded.source_updated_at >= orders.source_updated_at)
      -- The same version saying the same is no write (a rerun rewrites nothing).
      and (excluded.source_updated_at is distinct from orders.source_updated_at
           or (orders.source_identity_id, orders.store_id, orders.status, orders.source_status, orders.total_fen,
               orders.paid_fen, orders.discount_fen, orders.shipping_fen, orders.currency, orders.placed_at,
               orders.paid_at, orders.cashier_code, orders.tenders)
              is distinct from
              (excluded.source_identity_id, excluded.store_id, excluded.status, excluded.source_status,
               excluded.total_fen, excluded.paid_fen, excluded.discount_fen, excluded.shipping_fen,
               excluded.currency, excluded.placed_at, excluded.paid_at, excluded.cashier_code, excluded.tenders)
           or (excluded.customer_id is not null and orders.customer_id is distinct from excluded.customer_id))
    returning id, channel_code, external_id, xmax = 0 as inserted, source_identity_id is null as detached
), products as materialized (
    select id, sku from product where sku in (select sku from stage_order_lines)
), new_lines as (
    insert into order_line (order_id, line_no, sku, product_id, title, quantity, unit_price_fen, discount_fen,
                            amount_fen, external_id)
    select w.id, l.line_no, l.sku, p.id, l.title, l.quantity, l.unit_price_fen,
           l.discount_fen, l.amount_fen, l.external_id
    from written w
    join stage_order_lines l on l.channel_code = w.channel_code and l.order_external_id = w.external_id
    left join products p on p.sku = l.sku
    where w.inserted
    returning 1
)
select (select count(*) from written) as orders, (select count(*) from new_lines) as lines,
       array(select id from written where not inserted) as updated,
       array(select external_id from written where detached) as detached,
       (select jsonb_agg(jsonb_build_array(channel_code, external_id, kept, refused)) from conflicts)::text
           as conflicts
""".replace(
    # The canonical statuses in their order (a constant of the code, not input: safe to inline).
    "STATUS_ORDER",
    "array[" + ", ".join(f"'{x}'" for x in ORDER_STATUSES) + "]",
)

# An updated order keeps the lines that did not change (same number, same values: a status update leaves
# them alone) and has the rest replaced: lines that changed or are gone are deleted, then the staged lines
# it does not have are inserted. The end state is the staged lines, as when they were replaced whole.
DELETE_CHANGED_LINES = """
delete from order_line x using orders o
where x.order_id = any($1::bigint[]) and o.id = x.order_id
  and not exists (
    select 1 from stage_order_lines l left join product p on p.sku = l.sku
    where l.channel_code = o.channel_code and l.order_external_id = o.external_id and l.line_no = x.line_no
      and l.sku is not distinct from x.sku and p.id is not distinct from x.product_id
      and l.title is not distinct from x.title and l.quantity is not distinct from x.quantity
      and l.unit_price_fen is not distinct from x.unit_price_fen
      and l.discount_fen is not distinct from x.discount_fen and l.amount_fen is not distinct from x.amount_fen
      and l.external_id is not distinct from x.external_id)
"""

# The product is looked up only for the lines inserted (the subquery runs per output row), not for every
# staged line of the updated orders: most of those lines are kept, and a status update inserts none. Statement
# time for 40k orders of two lines updated three times (a 50k-SKU catalogue, five runs): 0.88-0.98 s against
# 1.29-1.50 s joined.
INSERT_MISSING_LINES = """
insert into order_line (order_id, line_no, sku, product_id, title, quantity, unit_price_fen, discount_fen,
                        amount_fen, external_id)
select o.id, l.line_no, l.sku, (select p.id from product p where p.sku = l.sku),
       l.title, l.quantity, l.unit_price_fen, l.discount_fen, l.amount_fen, l.external_id
from orders o
join stage_order_lines l on l.channel_code = o.channel_code and l.order_external_id = o.external_id
where o.id = any($1::bigint[])
  and not exists (select 1 from order_line x where x.order_id = o.id and x.line_no = l.line_no)
"""

INSERT_INTERACTIONS = """
insert into interaction (channel_code, external_id, source_identity_id, customer_id, type, direction,
                         occurred_at, summary, payload)
select s.channel_code, s.external_id, si.id, coalesce(s.customer_id, si.customer_id), s.type, s.direction,
       s.occurred_at, s.summary, s.payload
from stage_interaction s
left join source_identity si on si.channel_code = s.channel_code and si.external_id = s.identity_external_id
on conflict (channel_code, external_id) do nothing
"""

INSERT_CONSENTS = """
insert into consent (customer_id, source_identity_id, purpose, status, source, recorded_at)
select distinct si.customer_id, si.id, c.purpose, c.status, c.channel_code, c.recorded_at
from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
     as c(channel_code, external_id, purpose, status, recorded_at)
join source_identity si on si.channel_code = c.channel_code and si.external_id = c.external_id
where not exists (
    select 1 from consent x
    where x.source_identity_id = si.id and x.purpose = c.purpose and x.status = c.status
      and x.recorded_at = c.recorded_at and x.source = c.channel_code)
"""

# A refund that names a line (Tmall's `oid`) gets that line's number; one naming no line, or a line its order
# does not have, refunds the order (line_no null).
# As for orders: a version of a refund that is not newer but says something else is a conflict, kept out.
UPSERT_REFUNDS = """
with r as materialized (
    select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::text[])
        as r(channel_code, external_id, order_external_id, amount_fen, reason, status, requested_at,
             source_updated_at, line_external_id)
), conflicts as materialized (
    select r.channel_code, r.external_id, to_jsonb(x) - 'id' - 'order_id' - 'landed_at' as kept, to_jsonb(r) as refused
    from r join refund x on x.channel_code = r.channel_code and x.external_id = r.external_id
    where r.source_updated_at <= x.source_updated_at
      and (x.amount_fen, x.reason, x.status, x.requested_at)
          is distinct from (r.amount_fen, r.reason, r.status, r.requested_at)
), written as (
insert into refund (channel_code, external_id, order_id, line_no, amount_fen, reason, status, requested_at,
                    source_updated_at)
select r.channel_code, r.external_id, o.id, (
           select x.line_no from order_line x where x.order_id = o.id and x.external_id = r.line_external_id
           order by x.line_no limit 1),
       r.amount_fen, r.reason, r.status, r.requested_at, r.source_updated_at
from r
join orders o on o.channel_code = r.channel_code and o.external_id = r.order_external_id
where not exists (select 1 from conflicts c where c.channel_code = r.channel_code and c.external_id = r.external_id)
on conflict (channel_code, external_id) do update set
    order_id = excluded.order_id, line_no = excluded.line_no, amount_fen = excluded.amount_fen,
    reason = excluded.reason, status = excluded.status, requested_at = excluded.requested_at,
    source_updated_at = excluded.source_updated_at
where (refund.source_updated_at is null or excluded.source_updated_at >= refund.source_updated_at)
  and (excluded.source_updated_at is distinct from refund.source_updated_at
       or (refund.order_id, refund.line_no, refund.amount_fen, refund.reason, refund.status, refund.requested_at)
          is distinct from (excluded.order_id, excluded.line_no, excluded.amount_fen, excluded.reason,
                            excluded.status, excluded.requested_at))
returning 1
)
select (select count(*) from written) as refunds,
       (select jsonb_agg(jsonb_build_array(channel_code, external_id, kept, refused)) from conflicts)::text
           as conflicts
"""

# The history keeps every reason an entry was held for: seen again for another reason (a mapping changed, a
# check was added), the new one is appended, never written over the old.
UPSERT_QUARANTINE = """
insert into quarantine (channel_code, entity, external_id, payload_hash, raw, reason, errors, seen_count, history,
                        retry, refetch)
select c, e, x, h, r, re, er, 1, jsonb_build_array(jsonb_build_object('at', now(), 'reason', re)),
       case when rf is null then 'revalidate' else 'refetch' end, rf
from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::jsonb[], $8::jsonb[])
    as u(c, e, x, h, r, re, er, rf)
on conflict (channel_code, payload_hash) do update set
    reason = excluded.reason, errors = excluded.errors, last_seen_at = now(),
    seen_count = quarantine.seen_count + 1,
    history = case when quarantine.reason is distinct from excluded.reason
                   then quarantine.history || excluded.history else quarantine.history end,
    retry = case when excluded.refetch is null then quarantine.retry else 'refetch' end,
    refetch = coalesce(excluded.refetch, quarantine.refetch)
"""

UPSERT_WATERMARK = """
insert into sync_watermark (connector, watermark_at, cursor, extra, updated_at)
values ($1, $2, $3, $4::jsonb, now())
on conflict (connector) do update set watermark_at = excluded.watermark_at, cursor = excluded.cursor,
    extra = excluded.extra, updated_at = now()
"""


def payload_hash(raw: Any) -> str:
    """sha256 of the canonical JSON of a payload: the same bad row is kept once."""
    return hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _identity_record(p: PersonIdentity, standardized: tuple[Any, ...]) -> tuple[Any, ...]:
    """A `stage_identities` row. raw (with the event merged in) goes as the bytes of its JSON, staged as
    bytea: no str round trip in Python, parsed once by PostgreSQL."""
    raw = p.raw if p.event is None else p.raw | p.event
    return (
        p.channel,
        p.external_id,
        orjson.dumps(raw, default=str),
        p.source_updated_at,
        p.stub,
    ) + standardized


def _truncate(value: str | None, width: int) -> str | None:
    return value if value is None or len(value) <= width else value[:width]


@dataclass
class LandingStats:
    """What landed; the flows report it in their run states and the CLI prints it."""

    identities: int = 0
    orders: int = 0
    order_lines: int = 0
    refunds: int = 0
    interactions: int = 0
    consents: int = 0
    products: int = 0
    stores: int = 0
    quarantined: int = 0
    batches: int = 0
    # Records a failed batch's bisection set apart (`Lander.land_isolating`): counted in `quarantined` too.
    isolated: int = 0
    # Accounting, per stream: rows read = landed + quarantined + rejected + unchanged. `read` and `landed` count
    # the stream's own records (orders, refunds, interactions, products; people for a stream of people only),
    # rejected the files that could not be read at all; notes are quarantine entries about a row that landed
    # (a phone dropped from it), not rows.
    read: int = 0
    landed: int = 0
    rejected: int = 0
    notes: int = 0
    # Rows the channel announced (its window counts), for the progress bar's total; 0 where it tells none.
    expected: int = 0
    identity_ids: set[int] = field(default_factory=set)
    # (channel, order, buyer) of orders written before their buyer landed: noted, attached by `heal` later.
    detached: list[tuple[str, str, str]] = field(default_factory=list)
    # Versions refused as conflicts with what landed before (`UPSERT_ORDERS`), for quarantine.
    conflicts: list[QuarantinedRow] = field(default_factory=list)
    # (payload hashes) of rows this landing put into quarantine, e.g. refunds whose order is missing.
    quarantined_hashes: set[str] = field(default_factory=set)

    def merge(self, other: LandingStats) -> None:
        for name in ("identities", "orders", "order_lines", "refunds", "interactions", "consents", "products",
                     "stores", "quarantined", "batches", "isolated", "read", "landed", "rejected", "notes",
                     "expected"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.identity_ids |= other.identity_ids
        self.quarantined_hashes |= other.quarantined_hashes
        self.detached += other.detached
        self.conflicts += other.conflicts

    @property
    def unchanged(self) -> int:
        """Rows read that needed no write: the version landed already, or an older one."""
        return self.read - self.landed - self.quarantined - self.rejected

    def summary(self) -> dict[str, int]:
        return {
            "orders": self.orders,
            "order_lines": self.order_lines,
            "refunds": self.refunds,
            "identities": self.identities,
            "interactions": self.interactions,
            "consents": self.consents,
            "products": self.products,
            "stores": self.stores,
            "quarantined": self.quarantined,
            "read": self.read,
            "landed": self.landed,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
        }


REJECTED_FILE = "pos_file"
# Dependents waiting for a parent (errors' `type`): a refund for its order, an order for its buyer.
MISSING_ORDER = "missing_order"
MISSING_MEMBER = "missing_member"
# Two versions of one record that say different things, neither newer by the source's time.
CONFLICT = "conflict"


NOTE_TYPES = frozenset({"dropped_value", MISSING_MEMBER})


def is_note(q: QuarantinedRow) -> bool:
    """A quarantine entry about a row that landed (a value dropped from it, its buyer not landed yet), not a
    row held back."""
    return bool(q.errors) and all(e.get("type") in NOTE_TYPES for e in q.errors)


def conflict_entry(
    channel: str, external_id: str, kept: Any, refused: Any, entity: str = "order"
) -> QuarantinedRow:
    """A version of a record that says something else than the one kept without being newer: both are kept."""
    return QuarantinedRow(
        channel=channel,
        entity=entity,
        external_id=external_id,
        raw={"kept": kept, "refused": refused},
        reason="field `source_updated_at`: seen again with other content and no newer source time; the first "
        "version stays, both are kept here",
        errors=[{"loc": ["source_updated_at"], "msg": "conflicting version", "type": CONFLICT}],
    )


def _order_content(o: OrderRecord) -> tuple[Any, ...]:
    """What the channel said about an order (landing's derived values aside): two versions that differ here
    and are not ordered by source time are a conflict."""
    return (o.identity_external_id, o.store_code, o.source_status, o.total_fen, o.paid_fen, o.discount_fen,
            o.shipping_fen, o.currency, o.placed_at, o.paid_at, o.cashier_code, o.tenders,
            [dataclasses.astuple(ln) for ln in o.lines])  # fmt: skip


def _refund_content(r: RefundRecord) -> tuple[Any, ...]:
    return (r.order_external_id, r.amount_fen, r.reason, r.status, r.requested_at, r.line_external_id)


def _version(o: OrderRecord | RefundRecord) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(dataclasses.asdict(o), default=str))
    out.pop("raw", None)  # a refund's payload: the version's fields say what differs
    return out


def latest_keeping_conflicts(
    records: list[Any], content: Callable[[Any], tuple[Any, ...]], entity: str
) -> tuple[list[Any], list[QuarantinedRow]]:
    """One record per key, the newest by source time; a later copy with other content and no newer time is a
    conflict: the first stays, the copy is quarantined with both versions (nothing replaced without trace)."""
    best: dict[tuple[str, str], Any] = {}
    conflicts: list[QuarantinedRow] = []
    for r in records:
        k = (r.channel, r.external_id)
        current = best.get(k)
        if current is None or r.source_updated_at > current.source_updated_at:
            best[k] = r
        elif r is not current and content(r) != content(current):
            conflicts.append(conflict_entry(r.channel, r.external_id, _version(current), _version(r), entity))
    return list(best.values()), conflicts


def latest_orders(records: list[OrderRecord]) -> tuple[list[OrderRecord], list[QuarantinedRow]]:
    return latest_keeping_conflicts(records, _order_content, "order")


def detached_notes(detached: list[tuple[str, str, str]]) -> list[QuarantinedRow]:
    """Entries for orders that landed before their buyer: `heal` attaches them once the buyer lands. The
    reason names the field, not the buyer's key (it may be a phone)."""
    return [
        QuarantinedRow(
            channel=channel,
            entity="order",
            external_id=order,
            raw={"order": order, "member": member},
            reason="field `member`: the buyer has not landed yet; the order landed without them and attaches "
            "when they land",
            errors=[{"loc": ["member"], "msg": "buyer not landed", "type": MISSING_MEMBER}],
        )
        for channel, order, member in detached
    ]


def primary_kind(batch: Batch) -> str:
    """Which records a batch is made of, for its accounting: people count only in a stream of people."""
    if batch.orders or batch.interactions or batch.refunds or batch.products:
        return "records"
    return "identities" if batch.identities else "records"


def batch_reads(batch: Batch) -> int:
    """Rows a batch read: its own records plus the rows validation held back (notes aside)."""
    own = len(batch.orders) + len(batch.refunds) + len(batch.interactions) + len(batch.products)
    if primary_kind(batch) == "identities":
        own = len(batch.identities)
    return own + sum(1 for q in batch.quarantined if not is_note(q))


def _account(read: tuple[str, int, int], stats: LandingStats) -> None:
    kind, count, held_people = read
    stats.read += count
    if kind == "identities":
        stats.landed += stats.identities
    else:
        stats.landed += stats.orders + stats.refunds + stats.interactions + stats.products
        stats.quarantined -= held_people
        stats.notes += held_people


# Errors of one row's values (class 22: too long, out of range, bad encoding; class 23: a check, a reference):
# worth bisecting the batch for. Anything else (a lost connection, a deadlock) fails the batch as before.
ROW_ERRORS = (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError)


def _units(batch: Batch) -> list[Batch]:
    """The batch's records one per batch, each with the identities it reads (landing them twice is a no-op),
    in an order that lands what others read first."""
    people: dict[tuple[str, str], list[PersonIdentity]] = {}
    for p in batch.identities:
        people.setdefault((p.channel, p.external_id), []).append(p)
    used: set[tuple[str, str]] = set()

    def with_person(channel: str, identity: str | None) -> list[PersonIdentity]:
        if identity is None:
            return []
        key = (channel, identity)
        used.add(key)
        return list(people.get(key, ()))

    units: list[Batch] = [Batch(stores=[s]) for s in batch.stores]
    units += [Batch(products=[p]) for p in batch.products]
    units += [
        Batch(orders=[o], identities=with_person(o.channel, o.identity_external_id)) for o in batch.orders
    ]
    units += [
        Batch(interactions=[i], identities=with_person(i.channel, i.identity_external_id))
        for i in batch.interactions
    ]
    units += [
        Batch(consents=[c], identities=with_person(c.channel, c.identity_external_id)) for c in batch.consents
    ]
    units += [Batch(refunds=[r]) for r in batch.refunds]
    units[len(batch.stores) + len(batch.products) : len(batch.stores) + len(batch.products)] = [
        Batch(identities=group) for key, group in people.items() if key not in used
    ]
    return units


def _held(unit: Batch, exc: BaseException) -> list[QuarantinedRow]:
    """Quarantine rows for a record the database refused: the constraint or column and the error, never the
    value (a message can quote the row)."""
    what = getattr(exc, "constraint_name", None) or getattr(exc, "column_name", None)
    message = str(getattr(exc, "message", "") or type(exc).__name__).splitlines()[0][:200]
    sqlstate = getattr(exc, "sqlstate", None)
    records: list[tuple[str, Any, str, str | None]] = []
    records += [("order", o, o.channel, o.external_id) for o in unit.orders]
    records += [("interaction", i, i.channel, i.external_id) for i in unit.interactions]
    records += [("consent", c, c.channel, c.identity_external_id) for c in unit.consents]
    records += [("refund", r, r.channel, r.external_id) for r in unit.refunds]
    records += [("product", p, "catalog", p.sku) for p in unit.products]
    records += [("store", s, "pos", s.code) for s in unit.stores]
    if not records:
        records = [("identity", p, p.channel, p.external_id) for p in unit.identities[-1:]]
    return [
        QuarantinedRow(
            channel=channel,
            entity=RECORD_ENTITY_PREFIX + kind,
            external_id=None if ext is None else str(ext)[:128],
            raw=record_payload(record),
            reason=f"field `{what or kind}`: the database refused it ({sqlstate}: {message})",
            errors=[{"loc": [what or kind], "msg": message, "type": f"sqlstate_{sqlstate}"}],
        )
        for kind, record, channel, ext in records
    ]


def _latest_identities(records: list[PersonIdentity]) -> list[PersonIdentity]:
    """One identity per key: a full record beats a stub, then the most recently modified wins."""
    best: dict[tuple[str, str], PersonIdentity] = {}
    for r in records:
        k = (r.channel, r.external_id)
        current = best.get(k)
        if current is not None and r.stub and not current.stub:
            continue
        if (
            current is None
            or (current.stub and not r.stub)
            or current.source_updated_at is None
            or (r.source_updated_at is not None and r.source_updated_at >= current.source_updated_at)
        ):
            best[k] = r
    return list(best.values())


@dataclass(slots=True)
class Share:
    """The staging rows of one writer's part of a batch."""

    identity_records: list[tuple[Any, ...]] = field(default_factory=list)
    has_stubs: bool = False
    # Repeat versions (`TOUCH_IDENTITIES`): (channel, external id, source time, previous source time, event
    # JSON), with the identity and its standardized attributes for the full upsert should the touch miss.
    touches: list[tuple[str, str, datetime | None, datetime, str | None]] = field(default_factory=list)
    touch_fallbacks: list[tuple[PersonIdentity, tuple[Any, ...]]] = field(default_factory=list)
    order_records: list[tuple[Any, ...]] = field(default_factory=list)
    line_records: list[tuple[Any, ...]] = field(default_factory=list)


@dataclass(slots=True)
class PreparedBatch:
    """A batch with its staging rows built (`Lander.prepare`), ready for `Lander.write`. Identities and
    orders are split into one share per writer by the identity's key, so two writers never touch the same
    row; everything else in the batch goes with share 0, which also carries the watermark advances."""

    batch: Batch
    shares: list[Share]
    # The stream's own records the batch held as the connector yielded it (before checks and dedup).
    read: tuple[str, int, int] = ("", 0, 0)


class Lander:
    """Lands batches through one asyncpg connection taken from the engine's pool."""

    # Identities already landed unchanged in this run are not written again, a newer version saying the same
    # only touched (`TOUCH_IDENTITIES`), and the standardized form of attributes already seen is reused (a
    # buyer with 50 orders is standardized once); all bounded so memory stays flat however long the feed is.
    SEEN_LIMIT = 100_000
    # Records prepared between two hand-backs of the event loop (a few milliseconds of CPU).
    PREPARE_SLICE = 1_000

    def __init__(self, connection: asyncpg.Connection, *more: asyncpg.Connection) -> None:
        self.connection = connection
        self.connections = (connection, *more)
        # Keyed hashes of erased people's identifiers (sync.suppression): their records are not landed.
        self.erased: frozenset[str] = frozenset()
        # Times a record may carry (sync.constraints); the runner sets the configured ones.
        self.bounds = TimeBounds()
        # (channel, external id) -> (source time, content key) of the version last written.
        self._seen: OrderedDict[tuple[str, str], tuple[datetime | None, int]] = OrderedDict()
        # (channel, external id) -> (content key, standardized attributes in staging column order).
        self._standardized: OrderedDict[tuple[str, str], tuple[int, tuple[Any, ...]]] = OrderedDict()

    @classmethod
    @asynccontextmanager
    async def open(cls, engine: AsyncEngine, writers: int = 1) -> AsyncIterator[Lander]:
        """A lander on `writers` pooled connections, with staging tables and the channel rows in place."""
        async with AsyncExitStack() as stack:
            connections: list[asyncpg.Connection] = []
            for _ in range(max(1, writers)):
                sa_conn = await stack.enter_async_context(engine.connect())
                raw = await sa_conn.get_raw_connection()
                connection: asyncpg.Connection = raw.driver_connection
                # Leave the SQLAlchemy-side transaction closed: this connection is driven through asyncpg only.
                await sa_conn.commit()
                for ddl in STAGING_DDL:
                    await connection.execute(ddl)
                connections.append(connection)
            await ensure_channels(connections[0])
            lander = cls(*connections)
            lander.erased = await load_erased(connections[0])
            yield lander

    @staticmethod
    def _content_key(p: PersonIdentity) -> int:
        """Equal for equal attributes and raw payload, the event aside (connectors build both in one fixed
        order, so a different order can only cost a redundant write, never a skipped one)."""
        try:
            return hash((tuple(p.attributes.items()), tuple(p.raw.items())))
        except TypeError:  # an unhashable value (e.g. a nested object): compare its text
            return hash(
                (
                    tuple((k, repr(v)) for k, v in p.attributes.items()),
                    tuple((k, repr(v)) for k, v in p.raw.items()),
                )
            )

    def _fresh_identities(
        self, identities: list[PersonIdentity]
    ) -> tuple[list[PersonIdentity], list[tuple[str, str]], list[int], list[datetime | None]]:
        """One per key, minus versions no newer than what this lander already wrote for that key; with the
        key and the content key of each (computed once per identity: it is the lander's hottest bookkeeping),
        and, for a newer version with the same content as the one written, the source time written (it is
        only touched).

        Skipping only older (or identical) versions keeps the result independent of arrival order: the
        newest version of an identity is always written, and the database's guard keeps it.
        """
        fresh: list[PersonIdentity] = []
        keys: list[tuple[str, str]] = []
        content_keys: list[int] = []
        previous: list[datetime | None] = []
        content_key = self._content_key
        seen = self._seen
        for p in _latest_identities(identities):
            key = (p.channel, p.external_id)
            written = seen.get(key)
            content = content_key(p)
            repeat = None
            if written is not None:
                if p.stub:
                    continue
                at, written_content = written
                if p.source_updated_at is not None and at is not None:
                    if p.source_updated_at < at:
                        continue
                    if written_content == content:
                        if p.source_updated_at == at:
                            continue
                        repeat = at
            fresh.append(p)
            keys.append(key)
            content_keys.append(content)
            previous.append(repeat)
        return fresh, keys, content_keys, previous

    def _standardize(
        self, identities: list[PersonIdentity], keys: list[tuple[str, str]], content_keys: list[int]
    ) -> list[tuple[Any, ...]]:
        """Standardized attributes per identity in staging column order, computed only for an identity whose
        content is new to this lander."""
        cache = self._standardized
        out: list[tuple[Any, ...]] = []
        missing: list[int] = []
        for i, key in enumerate(keys):
            cached = cache.get(key)
            if cached is not None and cached[0] == content_keys[i]:
                cache.move_to_end(key)
                out.append(cached[1])
            else:
                missing.append(i)
                out.append(())
        if missing:
            standardized = standardize_identities([identities[i] for i in missing])
            for i, std in zip(missing, standardized, strict=True):
                values = _identity_column_values(std)
                cache[keys[i]] = (content_keys[i], values)
                cache.move_to_end(keys[i])
                out[i] = values
            while len(cache) > self.SEEN_LIMIT:
                cache.popitem(last=False)
        return out

    def _remember(
        self, identities: list[PersonIdentity], keys: list[tuple[str, str]], content_keys: list[int]
    ) -> None:
        seen = self._seen
        for p, key, content in zip(identities, keys, content_keys, strict=True):
            seen[key] = (p.source_updated_at, content)
            seen.move_to_end(key)
        while len(seen) > self.SEEN_LIMIT:
            seen.popitem(last=False)

    def prepare(self, batch: Batch) -> PreparedBatch:
        """The CPU half of landing a batch: pick the identities to write, standardize them and build the staging
        rows, one share per writer. The runner prepares the next batch while PostgreSQL writes the previous one
        (`prepare_async`).

        The identities are remembered as written here, before the write: the runner writes batches strictly in
        order and stops at the first failure, and a failed `write` forgets everything remembered, so a version
        is only ever skipped because an earlier batch holding it committed."""
        steps = self._prepare_steps(batch)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    async def prepare_async(self, batch: Batch) -> PreparedBatch:
        """`prepare`, handing the event loop back every `PREPARE_SLICE` records: preparing a batch takes tens
        of milliseconds of CPU, and in one piece it would hold up the write in flight on the same loop (its
        next statement, its COPY data), leaving PostgreSQL idle meanwhile."""
        steps = self._prepare_steps(batch)
        while True:
            await asyncio.sleep(0)
            try:
                next(steps)
            except StopIteration as done:
                return done.value

    def _prepare_steps(self, batch: Batch) -> Generator[None, None, PreparedBatch]:
        kind, count = primary_kind(batch), batch_reads(batch)
        batch = check_batch(batch, self.bounds)
        # People held by the checks in a batch of orders (or interactions): entries, but not rows it read.
        held_people = sum(1 for q in batch.quarantined if q.entity == RECORD_ENTITY_PREFIX + "identity")
        read = (kind, count, held_people)
        batch, _ = drop_erased(batch, self.erased)
        identities, keys, content_keys, previous = self._fresh_identities(batch.identities)
        standardized = self._standardize(identities, keys, content_keys)
        self._remember(identities, keys, content_keys)
        orders, conflicts = latest_orders(batch.orders)
        if conflicts:
            batch = dataclasses.replace(batch, quarantined=batch.quarantined + conflicts)
        # Rows that read other rows of the same batch (interactions and consents find their identity, orders
        # their store, lines their product) stay on one writer with what they read.
        split = len(self.connections) > 1 and not (
            batch.interactions or batch.consents or batch.stores or batch.products
        )
        shares = [Share() for _ in self.connections] if split else [Share()]
        count = len(shares)
        dumps, default = orjson.dumps, str
        slice_ = self.PREPARE_SLICE
        yield
        for i, (p, key, std, at) in enumerate(zip(identities, keys, standardized, previous, strict=True)):
            if i % slice_ == slice_ - 1:
                yield
            share = shares[hash(key) % count]
            if at is not None:
                event = p.event
                share.touches.append(
                    (p.channel, p.external_id, p.source_updated_at, at,
                     None if event is None else dumps(event, default=default).decode())
                )  # fmt: skip
                share.touch_fallbacks.append((p, std))
                continue
            share.identity_records.append(_identity_record(p, std))
            share.has_stubs = share.has_stubs or p.stub
        yield
        for i, o in enumerate(orders):
            if i % slice_ == slice_ - 1:
                yield
            channel, external_id = o.channel, o.external_id
            # An order goes with its buyer (whose row its insert reads), an anonymous one by its own key.
            share = shares[hash((channel, o.identity_external_id or external_id)) % count]
            tenders = o.tenders
            # Rows in ORDER_STAGE_COLUMNS and LINE_STAGE_COLUMNS order, built from plain attribute reads (on
            # slotted records a third of the cost of an attrgetter call plus a tuple concatenation), lines in a
            # plain loop (a generator per order cost more than the one or two rows most orders have).
            share.order_records.append(
                (channel, external_id, o.identity_external_id, o.store_code, o.status, o.source_status,
                 o.total_fen, o.paid_fen, o.discount_fen, o.shipping_fen, o.currency, o.placed_at, o.paid_at,
                 o.source_updated_at, o.cashier_code, None if tenders is None else dumps(tenders).decode())
            )  # fmt: skip
            append_line = share.line_records.append
            for ln in o.lines:
                append_line(
                    (channel, external_id, ln.line_no, ln.sku, ln.title, ln.quantity, ln.unit_price_fen,
                     ln.discount_fen, ln.amount_fen, ln.external_id)
                )  # fmt: skip
        return PreparedBatch(batch=batch, shares=shares, read=read)

    async def land(self, batch: Batch) -> LandingStats:
        """Land one batch and its watermark advances; return what was written."""
        return await self.write(self.prepare(batch))

    async def land_isolating(self, batch: Batch) -> LandingStats:
        """Land `batch` when landing it whole failed on a row: bisect it into smaller batches (each record with
        the identities it reads) until every failing record stands alone, quarantine those with the database's
        reason, and land the rest; the watermarks and finished files go last, with the quarantine."""
        stats = LandingStats()
        failed: list[tuple[Batch, BaseException]] = []

        async def attempt(units: list[Batch]) -> None:
            piece = Batch()
            for u in units:
                piece.extend(u)
            try:
                stats.merge(await self.land(piece))
            except ROW_ERRORS as exc:
                if len(units) == 1:
                    unit = units[0]
                    failed.append((dataclasses.replace(unit, identities=[]), exc))
                    if unit.identities and (unit.orders or unit.interactions or unit.consents):
                        # The person the failing record names lands on their own if they can.
                        await attempt([Batch(identities=unit.identities)])
                    elif unit.identities:
                        failed[-1] = (unit, exc)
                    return
                middle = len(units) // 2
                await attempt(units[:middle])
                await attempt(units[middle:])

        units = _units(batch)
        if units:
            await attempt(units)
        final = Batch(
            quarantined=list(batch.quarantined) + [q for unit, exc in failed for q in _held(unit, exc)],
            watermarks=batch.watermarks,
            files_done=batch.files_done,
        )
        stats.merge(await self.land(final))
        stats.isolated += len(failed)
        # The pieces each counted what they read; the batch read what it read once.
        stats.read, stats.landed = 0, 0
        held_people = sum(1 for q in final.quarantined if q.entity == RECORD_ENTITY_PREFIX + "identity")
        _account((primary_kind(batch), batch_reads(batch), held_people), stats)
        return stats

    async def write(self, prepared: PreparedBatch) -> LandingStats:
        """`_write_all`, with the batch's accounting: what it read, what of it landed."""
        stats = await self._write_all(prepared)
        _account(prepared.read, stats)
        return stats

    async def _write_all(self, prepared: PreparedBatch) -> LandingStats:
        """The database half: one transaction per share, on its own connection, all at once. Share 0 waits
        for the others to commit before it writes the watermark advances and commits: a watermark never
        commits ahead of the rows it covers (rows committed without their watermark are read again and landed
        once by the rerun)."""
        others = [
            asyncio.create_task(self._write(con, share))
            for con, share in zip(self.connections[1:], prepared.shares[1:], strict=False)
        ]
        try:
            stats = await self._write(self.connection, prepared.shares[0], prepared.batch, others)
        except BaseException:
            # What `prepare` remembered may not have committed: forget it all (it only saves redundant writes).
            self._seen.clear()
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            raise
        for task in others:
            stats.merge(task.result())
        stats.batches = 1
        return stats

    async def _write(
        self,
        con: asyncpg.Connection,
        share: Share,
        batch: Batch | None = None,
        before_watermark: list[asyncio.Task[LandingStats]] | None = None,
    ) -> LandingStats:
        """One share in one transaction; with `batch`, also the batch's other rows and its watermarks."""
        stats = LandingStats()
        async with con.transaction():
            # Staging tables and CTEs have no statistics, so the planner guesses their sizes; left to itself it
            # sorted the written orders and the staged lines by their text keys for a merge join (a third of the
            # orders statement) where hashing takes a fraction of it. For this transaction only.
            # Asynchronous commit: a database crash can lose the last batches committed, but only whole, with
            # their watermark, so the rerun reads them again. Not for a batch whose landing moves source files
            # out of the drop folder: those must be on disk before the files go (the first writer commits last, and
            # its synchronous commit flushes the WAL of the other writers' commits before it).
            await con.execute(
                "set local enable_mergejoin = off"
                + ("" if batch is not None and batch.files_done else "; set local synchronous_commit = off")
            )
            if batch is not None and batch.stores:
                await self._land_stores(batch, stats)
            if batch is not None and batch.products:
                await self._land_products(batch, stats)
            if share.identity_records or share.touches:
                await self._land_identities(con, share, stats)
            if share.order_records:
                await self._land_orders(con, share, stats)
            if batch is not None:
                await self._land_rest(batch, stats)
            if before_watermark:
                await asyncio.gather(*before_watermark)
            if batch is not None:
                others = [t.result() for t in before_watermark or ()]
                detached = stats.detached + [d for o in others for d in o.detached]
                if detached:
                    await self._land_quarantine(detached_notes(detached))
                    stats.notes += len(detached)
                conflicts = stats.conflicts + [c for o in others for c in o.conflicts]
                if conflicts:
                    await self._land_quarantine(conflicts)
                    stats.quarantined += len(conflicts)
                # The last advance per connector is where it stands (a batch of many pages carries one each).
                for wm in {w.connector: w for w in batch.watermarks}.values():
                    await con.execute(
                        UPSERT_WATERMARK, wm.connector, wm.watermark_at, wm.cursor, _json(wm.extra)
                    )
        return stats

    async def _land_rest(self, batch: Batch, stats: LandingStats) -> None:
        """Refunds, interactions, consents and quarantine: always on the first writer."""
        con = self.connection
        refund_misses: list[QuarantinedRow] = []
        if batch.refunds:
            refund_misses = await self._land_refunds(batch.refunds, stats)
        if batch.interactions:
            await self._land_interactions(batch, stats)
        if batch.consents:
            c = batch.consents
            result = await con.execute(
                INSERT_CONSENTS,
                [x.channel for x in c],
                [x.identity_external_id for x in c],
                [x.purpose for x in c],
                [x.status for x in c],
                [x.recorded_at for x in c],
            )
            stats.consents += int(result.split()[-1])
        quarantined = batch.quarantined + refund_misses
        if quarantined:
            await self._land_quarantine(quarantined)
            for q in quarantined:
                if q.entity == REJECTED_FILE:
                    stats.rejected += 1
                elif is_note(q):
                    stats.notes += 1
                else:
                    stats.quarantined += 1
            stats.quarantined_hashes.update(payload_hash(q.raw) for q in quarantined)

    async def _land_stores(self, batch: Batch, stats: LandingStats) -> None:
        rows = {s.code: s for s in batch.stores}
        await self.connection.executemany(
            # Sync only knows a store by its code: a store already described (by staff) is left as it is.
            """insert into store (code, name, province, city, district, address, opened_on)
               values ($1, $2, $3, $4, $5, $6, $7)
               on conflict (code) do nothing""",
            [(s.code, s.name, s.province, s.city, s.district, s.address, s.opened_on) for s in rows.values()],
        )
        stats.stores += len(rows)

    async def _land_products(self, batch: Batch, stats: LandingStats) -> None:
        rows = {p.sku: p for p in batch.products}
        result = await self.connection.execute(
            """insert into product (sku, title, category, list_price_fen)
               select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
               on conflict (sku) do update set title = excluded.title, category = excluded.category,
                 list_price_fen = excluded.list_price_fen
               where (product.title, product.category, product.list_price_fen)
                     is distinct from (excluded.title, excluded.category, excluded.list_price_fen)""",
            list(rows),
            [p.title for p in rows.values()],
            [p.category for p in rows.values()],
            [p.list_price_fen for p in rows.values()],
        )
        stats.products += int(result.split()[-1])

    async def _land_identities(self, con: asyncpg.Connection, share: Share, stats: LandingStats) -> None:
        records = share.identity_records
        rows: list[asyncpg.Record] = []
        if share.touches:
            rows = await con.fetch(TOUCH_IDENTITIES, *zip(*share.touches, strict=True))
            if len(rows) < len(share.touches):
                # Rows changed by another writer since this lander wrote them: the full upsert decides.
                touched = {(r["channel_code"], r["external_id"]) for r in rows}
                records = records + [
                    _identity_record(p, std)
                    for p, std in share.touch_fallbacks
                    if (p.channel, p.external_id) not in touched
                ]
        if records:
            await con.copy_records_to_table(
                "stage_identities", records=records, columns=IDENTITY_STAGE_COLUMNS
            )
            rows += await con.fetch(UPSERT_IDENTITIES)
            if share.has_stubs:
                rows += await con.fetch(INSERT_STUB_IDENTITIES)
        stats.identities += len(rows)
        stats.identity_ids.update(r["id"] for r in rows)

    async def _land_orders(self, con: asyncpg.Connection, share: Share, stats: LandingStats) -> None:
        await con.copy_records_to_table(
            "stage_orders", records=share.order_records, columns=ORDER_STAGE_COLUMNS
        )
        if share.line_records:
            await con.copy_records_to_table(
                "stage_order_lines", records=share.line_records, columns=LINE_STAGE_COLUMNS
            )
        written = await con.fetchrow(UPSERT_ORDERS)
        if written["conflicts"]:
            stats.conflicts += [conflict_entry(*c) for c in orjson.loads(written["conflicts"])]
        stats.orders += written["orders"]
        stats.order_lines += written["lines"]
        if written["detached"]:
            # Anonymous orders have no buyer to wait for: only those naming one are noted.
            gone = set(written["detached"])
            stats.detached += [(r[0], r[1], r[2]) for r in share.order_records if r[1] in gone and r[2]]
        updated: list[int] = written["updated"]
        if updated:
            # Lines are replaced only for orders this batch actually wrote (a stale version skips both).
            await con.execute(DELETE_CHANGED_LINES, updated)
            await con.execute(INSERT_MISSING_LINES, updated)
            stats.order_lines += await con.fetchval(
                "select count(*) from order_line where order_id = any($1::bigint[])", updated
            )

    async def _land_refunds(self, refunds: list[RefundRecord], stats: LandingStats) -> list[QuarantinedRow]:
        """Refunds whose order has not landed are quarantined (named by `tid`), not dropped."""
        con = self.connection
        latest, conflicts = latest_keeping_conflicts(refunds, _refund_content, "refund")
        known = {
            (r["channel_code"], r["external_id"])
            for r in await con.fetch(
                "select channel_code, external_id from orders o join unnest($1::text[], $2::text[]) "
                "as k(c, e) on o.channel_code = k.c and o.external_id = k.e",
                [r.channel for r in latest],
                [r.order_external_id for r in latest],
            )
        }
        landable = [r for r in latest if (r.channel, r.order_external_id) in known]
        misses = [
            QuarantinedRow(
                channel=r.channel,
                entity="refund",
                external_id=r.external_id,
                raw=r.raw,
                reason=f"field `tid`: order {r.order_external_id} has not landed yet; replay after the "
                "next trades sync",
                errors=[
                    {
                        "loc": ["tid"],
                        "msg": "order not landed",
                        "type": MISSING_ORDER,
                        "parent": r.order_external_id,
                    }
                ],
            )
            for r in latest
            if (r.channel, r.order_external_id) not in known
        ]
        misses += conflicts
        if landable:
            written = await con.fetchrow(
                UPSERT_REFUNDS,
                [r.channel for r in landable],
                [r.external_id for r in landable],
                [r.order_external_id for r in landable],
                [r.amount_fen for r in landable],
                [r.reason for r in landable],
                [r.status for r in landable],
                [r.requested_at for r in landable],
                [r.source_updated_at for r in landable],
                [r.line_external_id for r in landable],
            )
            stats.refunds += written["refunds"]
            if written["conflicts"]:
                misses += [
                    conflict_entry(c[0], c[1], c[2], c[3], "refund")
                    for c in orjson.loads(written["conflicts"])
                ]
        return misses

    async def _land_interactions(self, batch: Batch, stats: LandingStats) -> None:
        con = self.connection
        unique = {(i.channel, i.external_id): i for i in batch.interactions}
        await con.copy_records_to_table(
            "stage_interaction",
            records=[
                (
                    i.channel,
                    i.external_id,
                    i.identity_external_id,
                    i.type,
                    i.direction,
                    i.occurred_at,
                    i.summary,
                    _json(i.payload),
                )  # fmt: skip
                for i in unique.values()
            ],
            columns=INTERACTION_STAGE_COLUMNS,
        )
        result = await con.execute(INSERT_INTERACTIONS)
        stats.interactions += int(result.split()[-1])

    async def _land_quarantine(self, rows: list[QuarantinedRow]) -> None:
        unique: dict[tuple[str, str], QuarantinedRow] = {}
        for q in rows:
            unique[(q.channel, payload_hash(q.raw))] = q
        await self.connection.execute(
            UPSERT_QUARANTINE,
            [k[0] for k in unique],
            [q.entity for q in unique.values()],
            [_truncate(q.external_id, 128) for q in unique.values()],
            [k[1] for k in unique],
            [_json(q.raw) for q in unique.values()],
            [q.reason for q in unique.values()],
            [_json(q.errors) for q in unique.values()],
            [None if q.refetch is None else _json(q.refetch) for q in unique.values()],
        )


async def ensure_channels(connection: asyncpg.Connection) -> None:
    """The channel rows every landed row refers to; existing rows (and their config) are kept."""
    await connection.executemany(
        "insert into channel (code, family, name, trust_rank) values ($1, $2, $3, $4) on conflict (code) do nothing",
        [(code, fam, name, rank) for code, (fam, name, rank) in CHANNEL_FAMILIES.items()],
    )


async def read_watermark(engine: AsyncEngine, connector: str) -> dict[str, Any] | None:
    """The stored watermark of `connector` (watermark_at, cursor, extra), or None before its first run."""
    async with engine.connect() as sa_conn:
        raw = await sa_conn.get_raw_connection()
        con: asyncpg.Connection = raw.driver_connection
        row = await con.fetchrow(
            "select watermark_at, cursor, extra from sync_watermark where connector = $1", connector
        )
        await sa_conn.commit()
    if row is None:
        return None
    extra = row["extra"]
    return {
        "watermark_at": row["watermark_at"],
        "cursor": row["cursor"],
        "extra": orjson.loads(extra) if isinstance(extra, str) else (extra or {}),
    }
