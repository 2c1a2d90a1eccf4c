"""Merge, unmerge and the review queue, for staff_admin (decisions) and staff (reading the queue).

Merges and unmerges move orders, points and tiers between customers: each takes an `idempotencyKey`, and a
retry with the same key (after a timeout, say) answers with the first call's result instead of acting twice.
Every one is audited (identity.merge writes the audit rows; the key is recorded beside them)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
import strawberry
from sqlalchemy.ext.asyncio import AsyncConnection
from strawberry.scalars import JSON

from crm.registry import recompute
from identity.erasure import ErasureError, erase_customer
from identity.merge import MergeError, merge_customers, preview_merge, unmerge_event
from schema.context import Info
from schema.customer import ATTRIBUTES, Customer, load_customer
from schema.errors import BadInput, UserError
from schema.identity import SourceIdentity, identity_node
from schema.masking import shown
from schema.permissions import IsStaff, IsStaffAdmin
from schema.relay import Connection, Node, connection, decode_cursor, int_id, page_size, to_global_id


@strawberry.input
class MergeCustomersInput:
    customer_ids: list[strawberry.ID] = strawberry.field(description="Two or more; the oldest id survives.")
    reason: str
    idempotency_key: str = strawberry.field(description="Unique per intended merge; a retry reuses it.")
    dry_run: bool = strawberry.field(
        default=False, description="Answer what the merge would do (in `dryRun`) and change nothing."
    )


@strawberry.input
class UnmergeInput:
    merge_event_id: strawberry.ID
    reason: str
    idempotency_key: str


@strawberry.input
class EraseCustomerInput:
    customer_id: strawberry.ID = strawberry.field(description="The active (surviving) customer.")
    reason: str = strawberry.field(description="Why, e.g. the request's reference; kept in the audit log.")
    idempotency_key: str


@strawberry.type
class ErasePayload:
    erased_customer_ids: list[strawberry.ID] = strawberry.field(
        description="The customer and every customer merged into it (the same person)."
    )
    identities: int = strawberry.field(description="Source identities anonymized.")
    suppressed: int = strawberry.field(description="Identifiers the next syncs will refuse to land.")
    replayed: bool
    user_errors: list[UserError]


@strawberry.type(description="An attribute of the survivor that the merge would change.")
class MergeChange:
    field: str
    before: str | None
    after: str | None
    masked: bool = strawberry.field(description="True when the values are shown masked to this caller.")


@strawberry.type(description="The rows of the absorbed customers that would move to the survivor.")
class MergeMoves:
    identities: int
    orders: int
    interactions: int
    consents: int
    service_cases: int
    points_entries: int
    survey_responses: int


@strawberry.type(description="What a merge would do; nothing was changed.")
class MergeDryRun:
    survivor: Customer | None = strawberry.field(description="The customer that would survive, as it is now.")
    absorbed_customer_ids: list[strawberry.ID]
    changes: list[MergeChange] = strawberry.field(description="The survivor's attributes that would change.")
    moves: MergeMoves
    evidence: JSON = strawberry.field(description="Why the records look alike (the best-scoring pair).")


@strawberry.type
class MergePayload:
    customer: Customer | None
    merge_event_id: strawberry.ID | None
    replayed: bool = strawberry.field(
        description="True when this key was seen before and nothing was redone."
    )
    user_errors: list[UserError]
    dry_run: MergeDryRun | None = strawberry.field(default=None, description="Set for a dryRun: true call.")


@strawberry.type
class UnmergePayload:
    customers: list[Customer]
    merge_event_id: strawberry.ID | None
    replayed: bool
    user_errors: list[UserError]


@strawberry.input
class DecideReviewInput:
    review_id: strawberry.ID
    accept: bool


@strawberry.type
class DecideReviewPayload:
    review: ReviewPair | None
    merge_event_ids: list[strawberry.ID]
    user_errors: list[UserError]


@strawberry.type(description="A pair of identities scored between the thresholds, for a person to decide.")
class ReviewPair(Node):
    score: float
    features: JSON
    status: str = strawberry.field(description="pending, accepted or rejected.")
    decided_by: str | None
    created_at: datetime
    left_pk: strawberry.Private[int]
    right_pk: strawberry.Private[int]

    @strawberry.field
    async def left(self, info: Info) -> SourceIdentity | None:
        row = await info.context.loaders.identity.load(self.left_pk)
        return None if row is None else identity_node(info, row)

    @strawberry.field
    async def right(self, info: Info) -> SourceIdentity | None:
        row = await info.context.loaders.identity.load(self.right_pk)
        return None if row is None else identity_node(info, row)


def _review(r: dict[str, Any]) -> ReviewPair:
    return ReviewPair(
        id=to_global_id("ReviewPair", r["id"]),
        score=float(r["score"]),
        features=r["features"],
        status=r["status"],
        decided_by=r["decided_by"],
        created_at=r["created_at"],
        left_pk=r["left_identity_id"],
        right_pk=r["right_identity_id"],
    )


async def _replay(conn: AsyncConnection, actor: str, action: str, key: str) -> dict[str, Any] | None:
    """The first call's result for (actor, action, key), after taking a lock that serializes retries."""
    if not key.strip() or len(key) > 200:
        raise BadInput("idempotencyKey must be 1 to 200 characters", field="idempotencyKey")
    digest = int.from_bytes(
        hashlib.sha256(f"{actor}\0{action}\0{key}".encode()).digest()[:8], "big", signed=True
    )
    await conn.execute(sa.text("select pg_advisory_xact_lock(:k)"), {"k": digest})
    found = (
        await conn.execute(
            sa.text(
                "select detail from audit_log where actor = :a and action = :act and detail->>'idempotency_key' = :k "
                "order by at desc limit 1"
            ),
            {"a": actor, "act": action, "k": key},
        )
    ).scalar()
    return dict(found) if found else None


async def audit_customer(
    conn: AsyncConnection, actor: str, role: str, action: str, subject: int, detail: dict[str, Any]
) -> None:
    await conn.execute(
        sa.text(
            "insert into audit_log (actor, actor_role, action, subject_type, subject_id, detail) "
            "values (:a, :r, :act, 'customer', :s, cast(:d as jsonb))"
        ),
        {"a": actor, "r": role, "act": action, "s": str(subject), "d": orjson.dumps(detail).decode()},
    )


async def merge_customers_mutation(info: Info, input: MergeCustomersInput) -> MergePayload:
    principal = info.context.principal
    try:
        ids = sorted({int_id(i, "Customer") for i in input.customer_ids})
    except BadInput as exc:
        return MergePayload(customer=None, merge_event_id=None, replayed=False,
                            user_errors=[UserError(field=["customerIds"], message=exc.message, code="BAD_ID")])  # fmt: skip
    if len(ids) < 2:
        return MergePayload(customer=None, merge_event_id=None, replayed=False,
                            user_errors=[UserError(field=["customerIds"], message="give at least two customers", code="TOO_FEW")])  # fmt: skip
    if input.dry_run:
        return await _merge_dry_run(info, ids)
    async with info.context.engine.begin() as conn:
        done = await _replay(conn, principal.actor, "api.merge", input.idempotency_key)
        if done is not None:
            survivor = await load_customer(info, int(done["surviving_customer_id"]))
            return MergePayload(customer=survivor, merge_event_id=to_global_id("MergeEvent", done["merge_event_id"]),
                                replayed=True, user_errors=[])  # fmt: skip
        try:
            preview = await merge_customers(conn, ids, actor=principal.actor, reason=input.reason)
        except MergeError as exc:
            return MergePayload(customer=None, merge_event_id=None, replayed=False,
                                user_errors=[UserError(field=["customerIds"], message=str(exc), code="CANNOT_MERGE")])  # fmt: skip
        await audit_customer(conn, principal.actor, principal.role, "api.merge", preview.surviving_customer_id, {
            "idempotency_key": input.idempotency_key, "merge_event_id": preview.merge_event_id,
            "surviving_customer_id": preview.surviving_customer_id, "absorbed_customer_ids": preview.absorbed_customer_ids,
        })  # fmt: skip
    # Points, tier and segments of the merged customer now, not at the next sync.
    await recompute(info.context.engine, {preview.surviving_customer_id, *preview.absorbed_customer_ids})
    info.context.loaders.customer.clear_all()
    return MergePayload(
        customer=await load_customer(info, preview.surviving_customer_id),
        merge_event_id=to_global_id("MergeEvent", preview.merge_event_id or 0),
        replayed=False,
        user_errors=[],
    )


async def _merge_dry_run(info: Info, ids: list[int]) -> MergePayload:
    """The merge's preview in a read-only transaction: survivor, attribute changes (masked as any read
    is), the rows that would move; no key recorded, nothing written."""
    async with info.context.engine.connect() as conn:
        await conn.execute(sa.text("set transaction read only"))
        try:
            preview = await preview_merge(conn, ids)
        except MergeError as exc:
            return MergePayload(customer=None, merge_event_id=None, replayed=False,
                                user_errors=[UserError(field=["customerIds"], message=str(exc), code="CANNOT_MERGE")])  # fmt: skip
        await conn.rollback()
    survivor = preview.surviving_customer_id
    changes = []
    for column, name in ATTRIBUTES:
        before, after = preview.current.get(column), preview.golden.get(column)
        if before == after:
            continue
        shown_before, masked_before = shown(info, survivor, name, before)
        shown_after, masked_after = shown(info, survivor, name, after)
        masked = masked_before or masked_after
        changes.append(MergeChange(field=name, before=None if shown_before is None else str(shown_before),
                                   after=None if shown_after is None else str(shown_after), masked=masked))  # fmt: skip
    m = preview.moves
    evidence: Any = preview.evidence
    return MergePayload(
        customer=None, merge_event_id=None, replayed=False, user_errors=[],
        dry_run=MergeDryRun(
            survivor=await load_customer(info, survivor),
            absorbed_customer_ids=[to_global_id("Customer", c) for c in preview.absorbed_customer_ids],
            changes=changes,
            moves=MergeMoves(identities=m["source_identity"], orders=m["orders"], interactions=m["interaction"],
                             consents=m["consent"], service_cases=m["service_case"],
                             points_entries=m["points_ledger_entry"], survey_responses=m["survey_response"]),
            evidence=evidence,
        ),
    )  # fmt: skip


async def erase_customer_mutation(info: Info, input: EraseCustomerInput) -> ErasePayload:
    principal = info.context.principal

    def refused(message: str, code: str, field: str = "customerId") -> ErasePayload:
        return ErasePayload(erased_customer_ids=[], identities=0, suppressed=0, replayed=False,
                            user_errors=[UserError(field=[field], message=message, code=code)])  # fmt: skip

    try:
        customer_id = int_id(input.customer_id, "Customer")
    except BadInput as exc:
        return refused(exc.message, "BAD_ID")
    async with info.context.engine.begin() as conn:
        done = await _replay(conn, principal.actor, "api.erase", input.idempotency_key)
        replayed = done is not None
        if done is None:
            try:
                result = await erase_customer(conn, customer_id, actor=principal.actor, reason=input.reason)
            except ErasureError as exc:
                return refused(str(exc), "CANNOT_ERASE", "reason" if "reason" in str(exc) else "customerId")
            done = {"idempotency_key": input.idempotency_key, "customer_ids": result.customer_ids,
                    "identities": result.identities, "suppressed": result.suppressed}  # fmt: skip
            await audit_customer(conn, principal.actor, principal.role, "api.erase", customer_id, done)
    info.context.loaders.customer.clear_all()
    return ErasePayload(erased_customer_ids=[to_global_id("Customer", int(c)) for c in done["customer_ids"]],
                        identities=int(done["identities"]), suppressed=int(done["suppressed"]),
                        replayed=replayed, user_errors=[])  # fmt: skip


async def unmerge_mutation(info: Info, input: UnmergeInput) -> UnmergePayload:
    principal = info.context.principal
    event_id = int_id(input.merge_event_id, "MergeEvent")
    async with info.context.engine.begin() as conn:
        done = await _replay(conn, principal.actor, "api.unmerge", input.idempotency_key)
        if done is None:
            try:
                result = await unmerge_event(conn, event_id, actor=principal.actor, reason=input.reason)
            except MergeError as exc:
                return UnmergePayload(customers=[], merge_event_id=None, replayed=False,
                                      user_errors=[UserError(field=["mergeEventId"], message=str(exc), code="CANNOT_UNMERGE")])  # fmt: skip
            done = {"idempotency_key": input.idempotency_key, "merge_event_id": result.merge_event_id,
                    "customer_ids": result.customer_ids}  # fmt: skip
            await audit_customer(conn, principal.actor, principal.role, "api.unmerge", event_id, done)
            replayed = False
        else:
            replayed = True
    if not replayed:
        await recompute(info.context.engine, {int(i) for i in done["customer_ids"]})
    info.context.loaders.customer.clear_all()
    customers = [
        c for c in [await load_customer(info, int(i)) for i in done["customer_ids"]] if c is not None
    ]
    return UnmergePayload(customers=customers, merge_event_id=to_global_id("MergeEvent", done["merge_event_id"]),
                          replayed=replayed, user_errors=[])  # fmt: skip


async def decide_review_mutation(info: Info, input: DecideReviewInput) -> DecideReviewPayload:
    from identity.linking import resolve_review

    review_id = int_id(input.review_id, "ReviewPair")
    try:
        report = await resolve_review(
            info.context.engine, review_id, accept=input.accept, actor=info.context.principal.actor
        )
    except ValueError as exc:
        return DecideReviewPayload(review=None, merge_event_ids=[],
                                   user_errors=[UserError(field=["reviewId"], message=str(exc), code="NOT_PENDING")])  # fmt: skip
    found = await info.context.loaders.review.load(review_id)
    events = report.merge_event_ids if report else []
    return DecideReviewPayload(review=_review(found) if found else None,
                               merge_event_ids=[to_global_id("MergeEvent", e) for e in events], user_errors=[])  # fmt: skip


async def review_queue(
    info: Info, first: int | None = None, after: str | None = None
) -> Connection[ReviewPair]:
    """Pending pairs, highest score first (keyset on score, id)."""
    n = page_size(first)
    key = decode_cursor(after)
    params: dict[str, Any] = {"lim": n + 1}
    keyset = ""
    if key is not None:
        try:
            params["s"], params["i"] = float(key[0]), int(key[1])
        except (IndexError, TypeError, ValueError) as exc:
            raise BadInput(f"after: {after!r} is not a cursor of this connection") from exc
        keyset = " and (r.score, r.id) < (:s, :i)"
    sql = f"""
        select t.total as _total, p.* from (select count(*) as total from identity_review where status = 'pending') t
        left join lateral (select r.id, r.left_identity_id, r.right_identity_id, r.score, r.features, r.status,
                                  r.decided_by, r.created_at
                             from identity_review r where r.status = 'pending'{keyset}
                            order by r.score desc, r.id desc limit :lim) p on true
    """  # noqa: S608 - keyset is a fixed fragment
    from schema.loaders import fetch_page

    page = await fetch_page(info.context.engine, sql, **params)
    result: Connection[ReviewPair] = connection(
        page, n, after, lambda r: [float(r["score"]), r["id"]], _review
    )
    return result


@strawberry.type
class Query:
    review_queue: Connection[ReviewPair] = strawberry.field(
        resolver=review_queue,
        permission_classes=[IsStaff],
        description="Identity pairs waiting for a decision.",
    )


@strawberry.type
class Mutation:
    merge_customers: MergePayload = strawberry.field(
        resolver=merge_customers_mutation, permission_classes=[IsStaffAdmin],
        description="Merge customers (oldest id survives); orders, points and tiers follow. Idempotent by key.",
    )  # fmt: skip
    unmerge: UnmergePayload = strawberry.field(
        resolver=unmerge_mutation, permission_classes=[IsStaffAdmin],
        description="Undo a merge event: the absorbed customers come back with their rows. Idempotent by key.",
    )  # fmt: skip
    erase_customer: ErasePayload = strawberry.field(
        resolver=erase_customer_mutation, permission_classes=[IsStaffAdmin],
        description="The right to erasure (PIPL, GDPR): the person's data removed everywhere, their identifiers "
        "suppressed so syncs do not bring them back; orders keep their totals. Cannot be undone. Idempotent by key.",
    )  # fmt: skip
    decide_review: DecideReviewPayload = strawberry.field(
        resolver=decide_review_mutation, permission_classes=[IsStaffAdmin],
        description="Accept (merge) or reject (never link) a review pair.",
    )  # fmt: skip
