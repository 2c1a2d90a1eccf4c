"""recordInteraction / recordInteractions: interactions of channels without a connector (a call centre, a
store event, a partner's app), written by staff or by a downstream service.

Idempotent on (channel, externalId), as sync is: a replay answers the row already stored and changes
nothing. The rows land through sync's own statement (`sync.landing.INSERT_INTERACTIONS`), checked by
sync's own rules (`sync.constraints.check_interaction`). In a batch, a bad item is a userError whose
`field` starts with its index (["items", "3", "occurredAt"]) and the good items land."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
import strawberry
from strawberry.scalars import JSON

from schema.context import Info
from schema.customer import IdentifierKind, current_customers, customers_by_identifiers, identifier_key
from schema.errors import BadInput, UserError
from schema.interactions import Interaction, interaction_node
from schema.permissions import IsStaffOrService
from schema.relay import int_id
from sync.canonical import InteractionRecord
from sync.constraints import TimeBounds, Violation, check_interaction
from sync.landing import INSERT_INTERACTIONS, STAGE_INTERACTION_DDL

MAX_BATCH = 500

# sync's record field -> the input's field name, for userErrors.
_INPUT_FIELD = {
    "channel": "channel",
    "external_id": "externalId",
    "type": "type",
    "direction": "direction",
    "summary": "summary",
    "occurred_at": "occurredAt",
    "payload": "payload",
}


@strawberry.input(description="The customer by id, or by an identifier as customerByIdentifier takes one.")
class IdentifierInput:
    kind: IdentifierKind
    value: str


@strawberry.input
class RecordInteractionInput:
    channel: str = strawberry.field(description="A registered channel code (the `channel` table).")
    external_id: str = strawberry.field(
        description="The channel's own id of the interaction; the replay key."
    )
    type: str = strawberry.field(description="follow, message, call, visit, ...")
    occurred_at: datetime = strawberry.field(description="ISO 8601 with offset.")
    customer_id: strawberry.ID | None = None
    identifier: IdentifierInput | None = None
    direction: str = "inbound"
    summary: str | None = None
    payload: JSON | None = None


@strawberry.input
class RecordInteractionsInput:
    items: list[RecordInteractionInput] = strawberry.field(description=f"At most {MAX_BATCH}.")


@strawberry.type
class RecordInteractionPayload:
    interaction: Interaction | None
    replayed: bool = strawberry.field(description="True when this (channel, externalId) was already stored.")
    user_errors: list[UserError]


@strawberry.type
class RecordInteractionsPayload:
    interactions: list[Interaction | None] = strawberry.field(
        description="One per item, in input order; null for an item refused in userErrors."
    )
    recorded: int = strawberry.field(description="Items stored by this call.")
    replayed: int = strawberry.field(description="Items already stored before (nothing changed).")
    user_errors: list[UserError]


@dataclass
class _Item:
    record: InteractionRecord
    customer_id: int | None = None
    identifier: tuple[str, str | None, str] | None = None


def _check(index: int, item: RecordInteractionInput, now: datetime) -> _Item | UserError:
    """The item as sync would land it, or the userError of its first problem."""

    def error(field: str, message: str, code: str = "INVALID") -> UserError:
        return UserError(field=["items", str(index), field], message=message, code=code)

    if (item.customer_id is None) == (item.identifier is None):
        return error("customerId", "give either customerId or identifier", "CUSTOMER_REQUIRED")
    if item.payload is not None and not isinstance(item.payload, dict):
        return error("payload", "must be a JSON object")
    record = InteractionRecord(
        channel=item.channel.strip(),
        external_id=item.external_id.strip(),
        identity_external_id=None,
        type=item.type.strip(),
        occurred_at=item.occurred_at,
        summary=item.summary,
        payload=dict(item.payload or {}),
        direction=item.direction,
    )
    try:
        check_interaction(record, TimeBounds(), now)
    except Violation as exc:
        return error(_INPUT_FIELD.get(exc.field, exc.field), exc.message)
    checked = _Item(record)
    try:
        if item.customer_id is not None:
            checked.customer_id = int_id(item.customer_id, "Customer")
        else:
            assert item.identifier is not None
            checked.identifier = identifier_key(item.identifier.kind, item.identifier.value)
    except BadInput as exc:
        field = "customerId" if item.customer_id is not None else "identifier"
        return error(field, exc.message, "BAD_ID")
    return checked


async def record_interactions_core(
    info: Info, items: list[RecordInteractionInput]
) -> tuple[list[Interaction | None], int, int, list[UserError]]:
    now = datetime.now(UTC)
    checked: list[_Item | UserError] = [_check(i, item, now) for i, item in enumerate(items)]
    errors = [c for c in checked if isinstance(c, UserError)]
    good = {i: c for i, c in enumerate(checked) if isinstance(c, _Item)}
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    fresh: set[tuple[str, str]] = set()
    async with info.context.engine.begin() as conn:
        channels = {
            r[0]
            for r in await conn.execute(
                sa.text("select code from channel where code = any(:c)"),
                {"c": sorted({c.record.channel for c in good.values()})},
            )
        }
        by_identifier = [i for i, c in good.items() if c.identifier is not None]
        looked_up = await customers_by_identifiers(conn, [good[i].identifier for i in by_identifier])  # type: ignore[misc]
        for i, found in zip(by_identifier, looked_up, strict=True):
            good[i].customer_id = found
        survivors = await current_customers(
            conn, {c.customer_id for c in good.values() if c.customer_id is not None}
        )
        landable: dict[tuple[str, str], tuple[InteractionRecord, int]] = {}
        for i, c in sorted(good.items()):
            field = "identifier" if c.identifier is not None else "customerId"
            if c.record.channel not in channels:
                errors.append(UserError(field=["items", str(i), "channel"], code="UNKNOWN_CHANNEL",
                                        message=f"no channel {c.record.channel!r} is registered"))  # fmt: skip
                del good[i]
                continue
            survivor = survivors.get(c.customer_id) if c.customer_id is not None else None
            if survivor is None or survivor[1] != "active":
                errors.append(UserError(field=["items", str(i), field], code="NOT_FOUND",
                                        message="no active customer is known by this " + field))  # fmt: skip
                del good[i]
                continue
            # The first of the same key in one call is the one stored; a later one is its replay.
            landable.setdefault((c.record.channel, c.record.external_id), (c.record, survivor[0]))
        if landable:
            await conn.execute(sa.text(STAGE_INTERACTION_DDL))
            values = list(landable.values())
            await conn.execute(
                sa.text(
                    "insert into stage_interaction (channel_code, external_id, type, direction, occurred_at,"
                    " summary, payload, customer_id)"
                    " select * from unnest(cast(:ch as text[]), cast(:e as text[]), cast(:t as text[]),"
                    " cast(:d as text[]), cast(:at as timestamptz[]), cast(:s as text[]), cast(:p as jsonb[]),"
                    " cast(:c as bigint[]))"
                ),
                {
                    "ch": [r.channel for r, _ in values],
                    "e": [r.external_id for r, _ in values],
                    "t": [r.type for r, _ in values],
                    "d": [r.direction for r, _ in values],
                    "at": [r.occurred_at for r, _ in values],
                    "s": [r.summary for r, _ in values],
                    "p": [orjson.dumps(r.payload).decode() for r, _ in values],
                    "c": [c for _, c in values],
                },
            )
            inserted = await conn.execute(
                sa.text(INSERT_INTERACTIONS + " returning channel_code, external_id")
            )
            fresh = {(str(a), str(b)) for a, b in inserted}
            rows = await conn.execute(
                sa.text(
                    "select i.id, i.channel_code, i.external_id, i.type, i.direction, i.occurred_at, i.summary"
                    " from interaction i join unnest(cast(:ch as text[]), cast(:e as text[])) as k(ch, e)"
                    " on i.channel_code = k.ch and i.external_id = k.e"
                ),
                {"ch": [k[0] for k in landable], "e": [k[1] for k in landable]},
            )
            stored = {(r["channel_code"], r["external_id"]): dict(r) for r in rows.mappings()}
    answers: list[Interaction | None] = [None] * len(items)
    recorded = replayed = 0
    for i, c in good.items():
        key = (c.record.channel, c.record.external_id)
        row = stored.get(key)
        answers[i] = None if row is None else interaction_node(row)
        if key in fresh:
            recorded += 1
            fresh.discard(key)  # a second item with the same key in this call is a replay
        else:
            replayed += 1
    errors.sort(key=lambda e: int((e.field or ["", "0"])[1]))
    return answers, recorded, replayed, errors


async def record_interaction(info: Info, input: RecordInteractionInput) -> RecordInteractionPayload:
    answers, _, replayed, errors = await record_interactions_core(info, [input])
    # A single item's errors name its fields without the batch's index.
    for e in errors:
        e.field = (e.field or [])[2:]
    return RecordInteractionPayload(interaction=answers[0], replayed=replayed == 1, user_errors=errors)


async def record_interactions_batch(info: Info, input: RecordInteractionsInput) -> RecordInteractionsPayload:
    if len(input.items) > MAX_BATCH:
        return RecordInteractionsPayload(interactions=[], recorded=0, replayed=0, user_errors=[
            UserError(field=["items"], message=f"at most {MAX_BATCH} items per call, got {len(input.items)}",
                      code="TOO_MANY")])  # fmt: skip
    answers, recorded, replayed, errors = await record_interactions_core(info, input.items)
    return RecordInteractionsPayload(
        interactions=answers, recorded=recorded, replayed=replayed, user_errors=errors
    )


@strawberry.type
class Mutation:
    record_interaction: RecordInteractionPayload = strawberry.field(
        resolver=record_interaction, permission_classes=[IsStaffOrService],
        description="Record one interaction of a channel without a connector. Idempotent on (channel, externalId).",
    )  # fmt: skip
    record_interactions: RecordInteractionsPayload = strawberry.field(
        resolver=record_interactions_batch, permission_classes=[IsStaffOrService],
        description=f"Record up to {MAX_BATCH} interactions; bad items come back in userErrors, the good ones land.",
    )  # fmt: skip
