"""Care in the graph: `careOutbox(kind, state)` for staff, `Customer.careActions`, and the delivery worker's
`claimCareActions` / `ackCareAction` (service role): a claim leases actions with FOR UPDATE SKIP LOCKED, so
two workers never get the same one, and an action not acknowledged before its lease ends is claimed again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from strawberry.dataloader import DataLoader
from strawberry.permission import BasePermission
from strawberry.scalars import JSON

from crm.care import outbox
from crm.care.outbox import ACTION_COLUMNS, CareRefusal
from crm.loyalty.service import in_transaction
from crm.service.config import get_config
from schema.context import Info
from schema.errors import UserError
from schema.loaders import PageArgs, customer_page_sql, customer_pages, fetch_page
from schema.masking import shown
from schema.permissions import IsStaff, customer_visible
from schema.relay import Connection, Node, connection, int_id, page_size, time_keyset, to_global_id

CARE_FILTERS = (("kind", "x.kind = :kind", "kind"), ("state", "x.state = :state", "state"))


class IsService(BasePermission):
    """The service role only: delivery workers of the messaging system."""

    message = "service role only"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return bool(info.context.principal.role == "service")


class CareLoaders:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.actions_page: DataLoader[tuple[int, PageArgs], Any] = DataLoader(
            self._action_pages, cache_key_fn=lambda k: k
        )

    async def _action_pages(self, keys: Sequence[tuple[int, PageArgs]]) -> list[Any]:
        return await customer_pages(
            self.engine,
            keys,
            lambda filters, after: customer_page_sql(
                "care_action",
                ACTION_COLUMNS.replace("a.", "x."),
                "x.created_at",
                CARE_FILTERS,
                filters,
                after,
            ),
        )


def care_loaders(info: Info) -> CareLoaders:
    found = info.context.domain_loaders.get("care")
    if found is None:
        found = info.context.domain_loaders["care"] = CareLoaders(info.context.engine)
    return found


@strawberry.type(description="One care action in the outbox, for a messaging system to deliver.")
class CareAction(Node):
    row: strawberry.Private[dict[str, Any]]

    @strawberry.field(
        description="birthday, points_expiring, case_followup, purchase_followup, regular_visit, tier_change,"
        " winback, survey_invite or case_update."
    )
    def kind(self) -> str:
        return str(self.row["kind"])

    @strawberry.field(description="What makes it once: '2026' for a birthday, 'case:12:0', 'order:5', ...")
    def period(self) -> str:
        return str(self.row["period"])

    @strawberry.field(description="sms, wechat_template, app_push or call_list.")
    def channel(self) -> str:
        return str(self.row["channel"])

    @strawberry.field(description="marketing (needs the channel's granted consent) or service.")
    def purpose(self) -> str:
        return str(self.row["purpose"])

    @strawberry.field(description="pending, claimed, delivered, failed or suppressed.")
    def state(self) -> str:
        return str(self.row["state"])

    @strawberry.field(description="Why it will not go out (no_marketing_consent:<purpose>, no_phone, ...).")
    def suppressed_reason(self) -> str | None:
        return self.row["suppressed_reason"]

    @strawberry.field(
        description="What the message says: coupon code, points, case number; never contact data."
    )
    def payload(self) -> JSON:
        return self.row["payload"]

    @strawberry.field
    def customer_id(self) -> strawberry.ID:
        return to_global_id("Customer", self.row["customer_id"])

    @strawberry.field(description="The phone to send to or call (masked unless the token may read PII).")
    async def phone(self, info: Info) -> str | None:
        customer = await info.context.loaders.customer.load(int(self.row["customer_id"]))
        if customer is None:
            return None
        value, _ = shown(info, int(self.row["customer_id"]), "phone", customer["phone"])
        return None if value is None else str(value)

    @strawberry.field
    def due_at(self) -> datetime:
        value: datetime = self.row["due_at"]
        return value

    @strawberry.field
    def attempts(self) -> int:
        return int(self.row["attempts"])

    @strawberry.field
    def claimed_by(self) -> str | None:
        return self.row["claimed_by"]

    @strawberry.field
    def lease_expires_at(self) -> datetime | None:
        return self.row["lease_expires_at"]

    @strawberry.field
    def delivered_at(self) -> datetime | None:
        return self.row["delivered_at"]

    @strawberry.field
    def last_error(self) -> str | None:
        return self.row["last_error"]

    @strawberry.field
    def created_at(self) -> datetime:
        value: datetime = self.row["created_at"]
        return value


def action_node(row: dict[str, Any]) -> CareAction:
    return CareAction(id=to_global_id("CareAction", row["id"]), row=row)


def _created_key(r: dict[str, Any]) -> list[Any]:
    return [r["created_at"].isoformat(), r["id"]]


@strawberry.type
class CareFields:
    """Customer's care fields (a CUSTOMER_MIXINS member: resolvers read self.pk)."""

    pk: strawberry.Private[int]

    @strawberry.field(description="Care actions written for the customer, newest first.")
    async def care_actions(
        self,
        info: Info,
        kind: str | None = None,
        state: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[CareAction] | None:
        if not customer_visible(info, self.pk):
            return None
        n = page_size(first)
        filters = tuple((k, v) for k, v in (("kind", kind), ("state", state)) if v)
        page = await care_loaders(info).actions_page.load((self.pk, (filters, n, time_keyset(after))))
        result: Connection[CareAction] = connection(page, n, after, _created_key, action_node)
        return result


async def resolve_care_outbox(
    info: Info,
    kind: str | None = None,
    state: str | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[CareAction]:
    """The outbox, newest first; `state: "suppressed"` lists what will not go out, with the reasons."""
    n = page_size(first)
    where: list[str] = ["true"]
    params: dict[str, Any] = {"lim": n + 1, "kind": kind, "state": state}
    if kind:
        where.append("x.kind = :kind")
    if state:
        where.append("x.state = :state")
    key = time_keyset(after)
    keyset = ""
    if key is not None:
        params["after_ts"], params["after_id"] = datetime.fromisoformat(key[0]), key[1]
        keyset = " and (x.created_at, x.id) < (:after_ts, :after_id)"
    cond = " and ".join(where)
    columns = ACTION_COLUMNS.replace("a.", "x.")
    sql = (
        f"select t.total as _total, p.* from (select count(*) as total from care_action x where {cond}) t"
        f" left join lateral (select {columns} from care_action x where {cond}{keyset}"
        " order by x.created_at desc, x.id desc limit :lim) p on true order by p.created_at desc, p.id desc"
    )
    page = await fetch_page(info.context.engine, sql, **params)
    result: Connection[CareAction] = connection(page, n, after, _created_key, action_node)
    return result


@strawberry.input
class ClaimCareActionsInput:
    limit: int = strawberry.field(default=20, description="At most 100.")
    channels: list[str] | None = strawberry.field(default=None, description="Only these channels (sms, ...).")
    kinds: list[str] | None = None


@strawberry.type
class ClaimPayload:
    actions: list[CareAction]
    lease_seconds: int = strawberry.field(
        description="Acknowledge within this, or the actions can be claimed again."
    )
    user_errors: list[UserError]


@strawberry.input
class AckCareActionInput:
    id: strawberry.ID
    delivered: bool = strawberry.field(
        description="False: delivery failed; it is tried again up to max_attempts."
    )
    error: str | None = None


@strawberry.type
class AckPayload:
    action: CareAction | None
    user_errors: list[UserError]


def _refusal(exc: CareRefusal) -> list[UserError]:
    return [UserError(field=[exc.field] if exc.field else None, message=exc.message, code=exc.code)]


async def claim_mutation(info: Info, input: ClaimCareActionsInput) -> ClaimPayload:
    config = get_config()
    worker = info.context.principal.actor

    async def work(conn: AsyncConnection) -> list[dict[str, Any]]:
        return await outbox.claim(conn, config, worker=worker, limit=input.limit, now=datetime.now(UTC),
                                  channels=input.channels, kinds=input.kinds)  # fmt: skip

    try:
        found = await in_transaction(info.context.engine, work)
    except CareRefusal as exc:
        return ClaimPayload(actions=[], lease_seconds=config.care.lease.seconds, user_errors=_refusal(exc))
    return ClaimPayload(
        actions=[action_node(r) for r in found], lease_seconds=config.care.lease.seconds, user_errors=[]
    )


async def ack_mutation(info: Info, input: AckCareActionInput) -> AckPayload:
    config = get_config()
    action_id = int_id(input.id, "CareAction")
    worker = info.context.principal.actor

    async def work(conn: AsyncConnection) -> dict[str, Any]:
        return await outbox.acknowledge(conn, config, action_id, worker=worker, delivered=input.delivered,
                                        error=input.error, now=datetime.now(UTC))  # fmt: skip

    try:
        row = await in_transaction(info.context.engine, work)
    except CareRefusal as exc:
        return AckPayload(action=None, user_errors=_refusal(exc))
    return AckPayload(action=action_node(row), user_errors=[])


@strawberry.type
class Query:
    care_outbox: Connection[CareAction] = strawberry.field(
        resolver=resolve_care_outbox, permission_classes=[IsStaff],
        description="Care actions, newest first, by kind and state (suppressed ones say why).",
    )  # fmt: skip


@strawberry.type
class Mutation:
    claim_care_actions: ClaimPayload = strawberry.field(
        resolver=claim_mutation, permission_classes=[IsService],
        description="A delivery worker leases due actions (never the same one as another worker).",
    )  # fmt: skip
    ack_care_action: AckPayload = strawberry.field(
        resolver=ack_mutation, permission_classes=[IsService],
        description="Report an action delivered or failed (only within your lease).",
    )  # fmt: skip


__all__ = ["CareFields", "Mutation", "Query"]
