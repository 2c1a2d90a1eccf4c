"""The care outbox: actions written set-based, idempotent per customer, kind and period, each checked
against consent as it is written (a suppressed action is kept with its reason); delivery workers claim
them with a lease (FOR UPDATE SKIP LOCKED: two workers never get the same action) and acknowledge them.
An action whose lease runs out unacknowledged can be claimed again."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crm.service.config import ServiceConfig

ACTION_COLUMNS = (
    "a.id, a.customer_id, a.kind, a.period, a.channel, a.purpose, a.state, a.suppressed_reason, a.payload,"
    " a.due_at, a.attempts, a.claimed_by, a.claimed_at, a.lease_expires_at, a.delivered_at, a.last_error,"
    " a.rule_version, a.created_at"
)


class CareRefusal(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


async def write_actions(
    conn: AsyncConnection,
    config: ServiceConfig,
    kind: str,
    source_sql: str,
    params: dict[str, Any],
    *,
    now: datetime,
) -> int:
    """Insert one action per row of `source_sql` (customer_id, period, payload, due_at) that is not in the
    outbox yet; the kind's channel and purpose come from the configuration. Returns the rows written."""
    spec = config.care.kind(kind)
    marketing_purpose = config.care.consent.marketing.get(spec.channel, "")
    result = await conn.execute(
        sa.text(
            f"""
with src as ({source_sql}),
c as (
    select s.customer_id, s.period, s.payload, s.due_at, g.status as customer_status,
           g.phone is not null as has_phone,
           exists (select 1 from source_identity i where i.customer_id = g.id and i.wechat_openid is not null)
               as has_openid,
           (select k.status from consent k where k.customer_id = s.customer_id and k.purpose = :marketing_purpose
             order by k.recorded_at desc, k.id desc limit 1) as marketing,
           (select k.status from consent k where k.customer_id = s.customer_id and k.purpose = :opt_out
             order by k.recorded_at desc, k.id desc limit 1) as service
    from src s join golden_customer g on g.id = s.customer_id
), judged as (
    select c.*, case
        when customer_status <> 'active' then 'customer_' || customer_status
        when :purpose = 'marketing' and marketing is distinct from 'granted'
            then 'no_marketing_consent:' || :marketing_purpose
        when service = 'withdrawn' then 'service_contact_withdrawn:' || :opt_out
        when :channel in ('sms', 'call_list') and not has_phone then 'no_phone'
        when :channel = 'wechat_template' and not has_openid then 'no_wechat_openid'
    end as reason
    from c
)
insert into care_action (customer_id, kind, period, channel, purpose, state, suppressed_reason, payload, due_at,
                         rule_version, created_at)
select customer_id, :kind, period, :channel, :purpose, case when reason is null then 'pending' else 'suppressed' end,
       reason, payload, due_at, :version, :now
from judged
on conflict (customer_id, kind, period) do nothing
"""
        ),
        {
            **params,
            "now": now,
            "kind": kind,
            "channel": spec.channel,
            "purpose": spec.purpose,
            "marketing_purpose": marketing_purpose,
            "opt_out": config.care.consent.service_opt_out,
            "version": config.version,
        },
    )
    return result.rowcount or 0


async def claim(
    conn: AsyncConnection,
    config: ServiceConfig,
    *,
    worker: str,
    limit: int,
    now: datetime,
    channels: list[str] | None = None,
    kinds: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Up to `limit` due actions (pending, or claimed with an expired lease), oldest due first, leased to
    `worker`. Rows another worker holds locked are skipped, never waited for or handed out twice."""
    if limit < 1 or limit > 100:
        raise CareRefusal("BAD_LIMIT", "limit must be between 1 and 100", "limit")
    lease = timedelta(seconds=config.care.lease.seconds)
    found = await conn.execute(
        sa.text(
            f"""
with due as (
    select id from care_action
    where (state = 'pending' or (state = 'claimed' and lease_expires_at <= :now)) and due_at <= :now
      and (cast(:channels as text[]) is null or channel = any(cast(:channels as text[])))
      and (cast(:kinds as text[]) is null or kind = any(cast(:kinds as text[])))
    order by due_at, id
    limit :limit
    for update skip locked
)
update care_action a set state = 'claimed', claimed_by = :worker, claimed_at = :now,
       lease_expires_at = :until, attempts = a.attempts + 1
from due where a.id = due.id
returning {ACTION_COLUMNS}
"""
        ),
        {"now": now, "until": now + lease, "worker": worker, "limit": limit, "channels": channels,
         "kinds": kinds},
    )  # fmt: skip
    return sorted((dict(r) for r in found.mappings().all()), key=lambda r: (r["due_at"], r["id"]))


async def acknowledge(
    conn: AsyncConnection,
    config: ServiceConfig,
    action_id: int,
    *,
    worker: str,
    delivered: bool,
    error: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The worker holding the lease reports delivery (or failure: the action is pending again until it
    has failed max_attempts times). A worker whose lease ran out or was taken over is refused."""
    row = (
        (
            await conn.execute(
                sa.text(f"select {ACTION_COLUMNS} from care_action a where a.id = :i for update"),
                {"i": action_id},
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise CareRefusal("NOT_FOUND", "no such care action", "id")
    if row["state"] == "delivered" and row["claimed_by"] == worker and delivered:
        return dict(row)  # the same acknowledgement again
    if row["state"] != "claimed" or row["claimed_by"] != worker:
        raise CareRefusal("NOT_CLAIMED", "this action is not claimed by you: claim it first", "id")
    if row["lease_expires_at"] <= now:
        raise CareRefusal("LEASE_EXPIRED", "the lease ran out: claim the action again", "id")
    if delivered:
        state = "delivered"
    else:
        state = "failed" if row["attempts"] >= config.care.lease.max_attempts else "pending"
    updated = (
        (
            await conn.execute(
                sa.text(
                    "update care_action a set state = :s, delivered_at = :delivered_at, last_error = :e, lease_expires_at = null where a.id = :i"
                    f" returning {ACTION_COLUMNS}"
                ),
                {"s": state, "delivered_at": now if delivered else None, "e": error, "i": action_id},
            )
        )
        .mappings()
        .one()
    )
    return dict(updated)
