"""The golden customer: every survivorship attribute with its lineage, identities per channel, consents,
merge history, orders and interactions, and summary figures. `customer(id)`, `customerByIdentifier`, `me`.

CRM domains add their fields to Customer by appending a strawberry type to CUSTOMER_MIXINS (their fields
read `self.pk`); see docs/api-conventions.md.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection

from identity.standardize import standardize_email, standardize_member_no, standardize_phone
from schema.analytics import AnalyticsFields
from schema.care import CareFields
from schema.consent import Consent
from schema.context import Info
from schema.errors import BadInput
from schema.identity import SourceIdentity, identity_node
from schema.interactions import Interaction, InteractionFilter, interactions_of
from schema.loyalty import LoyaltyFields
from schema.masking import shown
from schema.merges import MergeEvent
from schema.orders import Order, OrderFilter, orders_of
from schema.permissions import IsMember, customer_visible
from schema.relay import Connection, Node, int_id, to_global_id
from schema.scalars import Money
from schema.service import ServiceFields

# (GoldenCustomer column, GraphQL field): the survivorship attributes, each with its lineage.
ATTRIBUTES = (
    ("name", "name"),
    ("gender", "gender"),
    ("birth_date", "birthday"),
    ("phone", "phone"),
    ("email", "email"),
    ("province", "province"),
    ("city", "city"),
    ("district", "district"),
    ("address", "address"),
    ("member_no", "member_no"),
)


@strawberry.type(description="Where a surviving attribute value came from, and by which rule it won.")
class AttributeSource:
    channel: str | None
    external_id: str | None
    updated_at: datetime | None = strawberry.field(description="When the channel last reported it.")
    rule: str | None = strawberry.field(
        description="The survivorship rule that chose it; manual for a staff correction, which wins."
    )
    actor: str | None = strawberry.field(default=None, description="Who corrected it (rule manual).")


@strawberry.type(description="A golden attribute: its value (masked unless allowed) and its lineage.")
class Attribute:
    value: str | None
    masked: bool = strawberry.field(description="True when the value is shown masked to this caller.")
    source_identity_id: strawberry.Private[int | None]
    lineage: strawberry.Private[dict[str, Any]]

    @strawberry.field
    async def source(self, info: Info) -> AttributeSource | None:
        if not self.lineage:
            return None
        identity = None
        if self.source_identity_id is not None:
            identity = await info.context.loaders.identity.load(self.source_identity_id)
        observed = self.lineage.get("observed_at")
        return AttributeSource(
            channel=self.lineage.get("channel"),
            external_id=identity["external_id"] if identity else None,
            updated_at=datetime.fromisoformat(observed) if isinstance(observed, str) else None,
            rule=self.lineage.get("rule"),
            actor=self.lineage.get("actor"),
        )


@strawberry.type
class CustomerBase(Node):
    """The fields of the identity and orders domains; Customer adds the CRM mixins."""

    pk: strawberry.Private[int]
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field(description="The customer's numeric id (the member token subject).")
    def customer_id(self) -> int:
        return self.pk

    @strawberry.field(description="active, merged or erased.")
    def status(self) -> str:
        return str(self.row["status"])

    def _attribute(self, info: Info, column: str, field: str) -> Attribute:
        raw = self.row[column]
        value, masked = shown(info, self.pk, field, raw)
        lineage = (self.row.get("lineage") or {}).get(column) or {}
        sid = lineage.get("source_identity_id")
        text = value.isoformat() if hasattr(value, "isoformat") else value
        return Attribute(
            value=None if text is None else str(text),
            masked=masked,
            source_identity_id=int(sid) if sid is not None else None,
            lineage=lineage,
        )

    @strawberry.field
    def name(self, info: Info) -> Attribute:
        return self._attribute(info, "name", "name")

    @strawberry.field(description="M or F.")
    def gender(self, info: Info) -> Attribute:
        return self._attribute(info, "gender", "gender")

    @strawberry.field(description="YYYY-MM-DD (YYYY-**-** when masked).")
    def birthday(self, info: Info) -> Attribute:
        return self._attribute(info, "birth_date", "birthday")

    @strawberry.field(description="E.164 (138****5678 when masked).")
    def phone(self, info: Info) -> Attribute:
        return self._attribute(info, "phone", "phone")

    @strawberry.field
    def email(self, info: Info) -> Attribute:
        return self._attribute(info, "email", "email")

    @strawberry.field
    def province(self, info: Info) -> Attribute:
        return self._attribute(info, "province", "province")

    @strawberry.field
    def city(self, info: Info) -> Attribute:
        return self._attribute(info, "city", "city")

    @strawberry.field
    def district(self, info: Info) -> Attribute:
        return self._attribute(info, "district", "district")

    @strawberry.field(description="Street address (*** when masked).")
    def address(self, info: Info) -> Attribute:
        return self._attribute(info, "address", "address")

    @strawberry.field
    def member_no(self, info: Info) -> Attribute:
        return self._attribute(info, "member_no", "member_no")

    @strawberry.field(description="The source identities linked to this customer, by channel.")
    async def identities(self, info: Info) -> list[SourceIdentity]:
        found = await info.context.loaders.identities.load(self.pk)
        return [identity_node(info, r) for r in found]

    @strawberry.field(description="The consent in force per purpose.")
    async def consents(self, info: Info) -> list[Consent]:
        found = await info.context.loaders.consents.load(self.pk)
        return [
            Consent(
                purpose=r["purpose"], status=r["status"], source=r["source"], recorded_at=r["recorded_at"]
            )
            for r in found
        ]

    @strawberry.field(
        description="Merges, unmerges, links and splits this customer took part in, newest first."
    )
    async def merge_history(self, info: Info) -> list[MergeEvent]:
        found = await info.context.loaders.merges.load(self.pk)
        return [
            MergeEvent(
                id=to_global_id("MergeEvent", r["id"]),
                kind=r["kind"],
                actor=r["actor"],
                reason=r["reason"],
                surviving_customer_id=(
                    to_global_id("Customer", r["surviving_customer_id"])
                    if r["surviving_customer_id"]
                    else None
                ),
                absorbed_customer_ids=[to_global_id("Customer", c) for c in r["absorbed_customer_ids"]],
                evidence=r["evidence"],
                undone=r["undone_by_event_id"] is not None,
                created_at=r["created_at"],
            )
            for r in found
        ]

    @strawberry.field(description="Orders from every channel, newest first.")
    async def orders(
        self,
        info: Info,
        filter: OrderFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Order]:
        return await orders_of(info, self.pk, filter, first, after)

    @strawberry.field(description="One timeline of interactions across channels, newest first.")
    async def interactions(
        self,
        info: Info,
        filter: InteractionFilter | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Interaction]:
        return await interactions_of(info, self.pk, filter, first, after)

    @strawberry.field(description="Orders not cancelled.")
    async def order_count(self, info: Info) -> int:
        return int((await info.context.loaders.order_summary.load(self.pk))["order_count"])

    @strawberry.field(description="Paid amount of the orders not cancelled.")
    async def total_spent(self, info: Info) -> Money:
        return Money(fen=int((await info.context.loaders.order_summary.load(self.pk))["total_spent_fen"]))

    @strawberry.field
    async def first_order_at(self, info: Info) -> datetime | None:
        value: datetime | None = (await info.context.loaders.order_summary.load(self.pk))["first_order_at"]
        return value

    @strawberry.field
    async def last_order_at(self, info: Info) -> datetime | None:
        value: datetime | None = (await info.context.loaders.order_summary.load(self.pk))["last_order_at"]
        return value


# CRM domains append their Customer field mixins here (docs/api-conventions.md).
CUSTOMER_MIXINS: tuple[type, ...] = (LoyaltyFields, ServiceFields, CareFields, AnalyticsFields)


@strawberry.type(description="A golden customer: one real person across every channel.")
class Customer(CustomerBase, *CUSTOMER_MIXINS):  # type: ignore[misc]
    pass


def customer_node(row: dict[str, Any]) -> Customer:
    return Customer(id=to_global_id("Customer", row["id"]), pk=row["id"], row=row)


async def load_customer(info: Info, customer_id: int) -> Customer | None:
    """The customer, following merges to the survivor; None when it does not exist or the caller may not
    see it (a member asking for someone else gets null, as for a customer that does not exist)."""
    row = await info.context.loaders.customer.load(customer_id)
    for _ in range(8):  # merges chain at most a few deep
        if row is None or row["status"] != "merged" or row["merged_into"] is None:
            break
        row = await info.context.loaders.customer.load(row["merged_into"])
    if row is None or not customer_visible(info, row["id"]):
        return None
    return customer_node(row)


@strawberry.enum(description="Kinds of identifier `customerByIdentifier` looks a customer up by.")
class IdentifierKind(enum.Enum):
    PHONE = "phone"
    EMAIL = "email"
    WECHAT_UNIONID = "wechat_unionid"
    MEMBER_NO = "member_no"
    EXTERNAL_ID = "external_id"


async def resolve_customer(info: Info, id: strawberry.ID) -> Customer | None:
    return await load_customer(info, int_id(id, "Customer"))


async def resolve_me(info: Info) -> Customer | None:
    member = info.context.principal.member_customer_id
    return None if member is None else await load_customer(info, member)


def identifier_key(kind: IdentifierKind, value: str) -> tuple[str, str | None, str]:
    """(kind, channel, value) in the form source_identity stores it: phones in any format a person types
    (+86 138-1234-5678), e-mail in any case, `channel:external id` (tmall:buyer123). BadInput otherwise."""
    if kind is IdentifierKind.PHONE:
        phone, _ = standardize_phone(value)
        if phone is None:
            raise BadInput(f"value: {value!r} is not a phone number", field="value")
        return kind.value, None, phone
    if kind is IdentifierKind.EMAIL:
        email = standardize_email(value)
        if email is None:
            raise BadInput(f"value: {value!r} is not an e-mail address", field="value")
        return kind.value, None, email
    if kind is IdentifierKind.WECHAT_UNIONID:
        return kind.value, None, value.strip()
    if kind is IdentifierKind.MEMBER_NO:
        member_no = standardize_member_no(value)
        if member_no is None:
            raise BadInput(f"value: {value!r} is not a member number", field="value")
        return kind.value, None, member_no
    channel, sep, external = value.partition(":")
    if not sep or not channel.strip() or not external.strip():
        raise BadInput(
            "value: an external id is given as 'channel:external id', e.g. 'tmall:buyer123'", field="value"
        )
    return kind.value, channel.strip(), external.strip()


# Where each kind of identifier is found: what the channels report comes first (a verified phone, then the
# latest report); then a golden value no channel has, i.e. a staff correction. Fixed fragments only.
IDENTIFIER_CONDITIONS = {
    "phone": "si.phone = {v}",
    "email": "si.email = {v}",
    "wechat_unionid": "si.wechat_unionid = {v}",
    "member_no": "si.member_no = {v}",
    "external_id": "si.channel_code = {c} and si.external_id = {v}",
}
GOLDEN_IDENTIFIERS = ("phone", "email", "member_no")


def identifier_lookups(kind: str, c: str, v: str, guard: str = "") -> list[str]:
    """The subqueries giving the customer of identifier `kind` with channel `c` and value `v` (SQL
    expressions), in the order they are tried; `guard` is a condition each must also meet."""
    where = f"{guard} and " if guard else ""
    found = [
        f"(select si.customer_id from source_identity si where {where}{IDENTIFIER_CONDITIONS[kind].format(c=c, v=v)}"  # noqa: S608 - fixed fragments
        " and si.customer_id is not null order by si.phone_verified desc, si.source_updated_at desc nulls last"
        " limit 1)"
    ]
    if kind in GOLDEN_IDENTIFIERS:
        found.append(
            f"(select g.id from golden_customer g where {where}g.{kind} = {v} and g.status = 'active' order by g.id limit 1)"  # noqa: S608
        )
    return found


# The customer of each (kind, channel, value): one guarded subquery per kind, so each uses its own index.
_BY_IDENTIFIER = """
select u.i, coalesce({})
  from unnest(cast(:i as int[]), cast(:k as text[]), cast(:c as text[]), cast(:v as text[])) as u(i, k, c, v)
""".format(
    ", ".join(
        [
            q
            for kind in IDENTIFIER_CONDITIONS
            for q in identifier_lookups(kind, "u.c", "u.v", f"u.k = '{kind}'")[:1]
        ]
        + [
            q
            for kind in GOLDEN_IDENTIFIERS
            for q in identifier_lookups(kind, "u.c", "u.v", f"u.k = '{kind}'")[1:]
        ]
    )
)


async def customers_by_identifiers(
    conn: AsyncConnection, keys: Sequence[tuple[str, str | None, str]]
) -> list[int | None]:
    """The customer id of each `identifier_key`, in one statement (None where nobody has it)."""
    if not keys:
        return []
    found = await conn.execute(
        sa.text(_BY_IDENTIFIER),
        {
            "i": list(range(len(keys))),
            "k": [k[0] for k in keys],
            "c": [k[1] for k in keys],
            "v": [k[2] for k in keys],
        },
    )
    by_index = {int(i): (None if c is None else int(c)) for i, c in found}
    return [by_index.get(i) for i in range(len(keys))]


async def current_customers(conn: AsyncConnection, ids: set[int]) -> dict[int, tuple[int, str]]:
    """id -> (the customer it is now, merges followed, and that customer's status)."""
    found = await conn.execute(
        sa.text(
            """
            with recursive up(start, id, status, merged_into, depth) as (
                select g.id, g.id, g.status, g.merged_into, 0 from golden_customer g where g.id = any(:ids)
                union all
                select up.start, g.id, g.status, g.merged_into, up.depth + 1
                  from up join golden_customer g on g.id = up.merged_into
                 where up.status = 'merged' and up.depth < 8
            )
            select distinct on (start) start, id, status from up order by start, depth desc
            """
        ),
        {"ids": sorted(ids)},
    )
    return {int(s): (int(i), str(st)) for s, i, st in found}


async def resolve_by_identifier(info: Info, kind: IdentifierKind, value: str) -> Customer | None:
    """Phone in any format a person types (+86 138-1234-5678), e-mail in any case, WeChat unionid, member
    no., or `channel:external id` (tmall:buyer123)."""
    key = identifier_key(kind, value)
    async with info.context.engine.connect() as conn:
        [found] = await customers_by_identifiers(conn, [key])
    return None if found is None else await load_customer(info, found)


@strawberry.type
class Query:
    customer: Customer | None = strawberry.field(
        resolver=resolve_customer, description="A golden customer by id (a merged id gives its survivor)."
    )
    customer_by_identifier: Customer | None = strawberry.field(
        resolver=resolve_by_identifier,
        description="A customer by phone, e-mail, unionid, member no. or external id.",
    )
    me: Customer | None = strawberry.field(
        resolver=resolve_me, permission_classes=[IsMember], description="The member's own profile."
    )
