"""The right to erasure (PIPL art. 47, GDPR art. 17): a person's personal data removed from every table,
their identifiers suppressed so that the next sync does not bring them back.

What stays: the golden customer's row (status `erased`, no attributes) and its id, so that orders keep their
totals for accounting and the change feed can say `erased`; points and tier rows, which hold no personal
data. What goes: every attribute and raw payload of the person's golden customers (the active one and every
customer merged into it: the same person) and source identities, interaction contents, service texts,
merge snapshots (such a merge can no longer be undone), linkage features, and quarantined rows that name
one of their identifiers.

Suppression keeps keyed hashes (HMAC-SHA256 with C360_ERASURE_KEY), never the identifiers: an 11-digit phone
hashed without a key is recovered by trying all of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from identity.standardize import standardize_email, standardize_phone
from infra.settings import get_settings


class ErasureError(ValueError):
    """An erasure that cannot be done; the message says why."""


@dataclass(frozen=True)
class ErasureResult:
    customer_ids: list[int]
    identities: int
    suppressed: int
    quarantined_removed: int


def identifier_keys(
    *,
    channel: str | None = None,
    external_id: str | None = None,
    phone: str | None = None,
    email: str | None = None,
    unionid: str | None = None,
) -> list[tuple[str, str]]:
    """(kind, value) pairs a person is recognised by, normalised as landing normalises them."""
    keys: list[tuple[str, str]] = []
    if channel and external_id:
        keys.append((f"external:{channel}", external_id))
    if phone and (p := standardize_phone(phone)[0]):
        keys.append(("phone", p))
    if email and (e := standardize_email(email)):
        keys.append(("email", e))
    if unionid:
        keys.append(("unionid", unionid))
    return keys


def suppression_hash(kind: str, value: str, key: str | None = None) -> str:
    secret = (key or get_settings().erasure_key).encode()
    return hmac.new(secret, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()


async def suppressed(conn: Any, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of `keys` belong to an erased person (one statement for any number)."""
    by_hash = {suppression_hash(k, v): (k, v) for k, v in keys}
    if not by_hash:
        return set()
    rows = (
        await conn.execute(
            sa.text("select value_hash from erasure_suppression where value_hash = any(cast(:h as text[]))"),
            {"h": list(by_hash)},
        )
    ).all()
    return {by_hash[h] for (h,) in rows}


async def erase_customer(
    conn: AsyncConnection, customer_id: int, *, actor: str, reason: str, now: datetime | None = None
) -> ErasureResult:
    """Erase the person behind `customer_id` (an active golden customer) in the caller's transaction."""
    when = now or datetime.now(UTC)
    if not reason.strip():
        raise ErasureError("say why: the reason is kept in the audit log")
    row = (
        await conn.execute(
            sa.text("select status, merged_into from golden_customer where id = :c for update"),
            {"c": customer_id},
        )
    ).first()
    if row is None:
        raise ErasureError(f"customer {customer_id} does not exist")
    if row[0] == "merged":
        raise ErasureError(f"customer {customer_id} was merged into {row[1]}: erase the surviving customer")
    if row[0] == "erased":
        raise ErasureError(f"customer {customer_id} is already erased")
    # The person: this customer and every customer merged into it, at any depth.
    customers = [
        int(c)
        for (c,) in (
            await conn.execute(
                sa.text(
                    "with recursive tree(id) as (select cast(:c as bigint) union"
                    " select g.id from golden_customer g join tree t on g.merged_into = t.id)"
                    " select id from tree"
                ),
                {"c": customer_id},
            )
        ).all()
    ]
    params = {"ids": customers, "now": when}
    identities = (
        await conn.execute(
            sa.text(
                "select id, channel_code, external_id, phone, email, wechat_unionid, name, nickname, member_no"
                " from source_identity where customer_id = any(cast(:ids as bigint[]))"
            ),
            params,
        )
    ).all()
    golden = (
        await conn.execute(
            sa.text(
                "select phone, email, name, member_no from golden_customer where id = any(cast(:ids as bigint[]))"
            ),
            params,
        )
    ).all()
    keys: set[tuple[str, str]] = set()
    for i in identities:
        keys.update(identifier_keys(channel=i[1], external_id=i[2], phone=i[3], email=i[4], unionid=i[5]))
        if i[8]:
            keys.add(("member_no", i[8]))
    for g in golden:
        keys.update(identifier_keys(phone=g[0], email=g[1]))
    # What names the person in a free-form payload: their identifiers as whole JSON strings (a name is no
    # such thing: other people share it), and a Chinese mobile also as its 11 national digits.
    needles = {v for _, v in keys} | {v[3:] for k, v in keys if k == "phone" and v.startswith("+86")}
    identity_ids = [int(i[0]) for i in identities]
    params["sids"] = identity_ids

    rows = [{"kind": k, "hash": suppression_hash(k, v), "customer": customer_id} for k, v in sorted(keys)]
    await conn.execute(
        sa.text(
            "insert into erasure_suppression (kind, value_hash, customer_id, erased_at)"
            " select r.kind, r.hash, r.customer, :now"
            " from jsonb_to_recordset(cast(:rows as jsonb)) as r(kind text, hash text, customer bigint)"
            " on conflict do nothing"
        ),
        {"rows": json.dumps(rows), "now": when},
    )
    # Quarantined rows that name the person (their raw payload holds an identifier): removed, not kept.
    removed = (
        await conn.execute(
            sa.text(
                "delete from quarantine q where q.external_id = any(cast(:needles as text[]))"
                " or exists (select 1 from unnest(cast(:needles as text[])) n"
                "            where strpos(q.raw::text, '\"' || n || '\"') > 0)"
            ),
            {"needles": sorted(needles)},
        )
    ).rowcount or 0
    statements = (
        # External ids are identifiers too (a buyer nick, an openid): each becomes a placeholder that stays
        # unique per channel.
        """update source_identity set raw = '{}', external_id = 'erased-' || id, name = null, name_pinyin = null,
               nickname = null, phone = null, phone_masked = null, email = null, gender = null, id_number = null,
               member_no = null, wechat_unionid = null, wechat_openid = null, province = null, city = null,
               district = null, address_detail = null, postcode = null, birth_date = null, updated_at = :now
           where id = any(cast(:sids as bigint[]))""",
        """update interaction set summary = null, payload = '{}'
           where source_identity_id = any(cast(:sids as bigint[])) or customer_id = any(cast(:ids as bigint[]))""",
        """update refund set reason = null where order_id in
           (select id from orders where customer_id = any(cast(:ids as bigint[])))""",
        """update service_case set subject = '[erased]', description = null
           where customer_id = any(cast(:ids as bigint[]))""",
        """update case_event set note = null
           where case_id in (select id from service_case where customer_id = any(cast(:ids as bigint[])))""",
        """update survey_response set comment = null where customer_id = any(cast(:ids as bigint[]))""",
        # A merge's snapshot holds the merged customers' attributes: gone, so the merge cannot be undone.
        """update merge_event set snapshot = '{"erased": true}', evidence = '{}'
           where surviving_customer_id = any(cast(:ids as bigint[]))
              or absorbed_customer_ids && cast(:ids as bigint[])""",
        """update identity_link_audit set features = '{}'
           where source_identity_id = any(cast(:sids as bigint[]))""",
        """update identity_review set features = '{}'
           where left_identity_id = any(cast(:sids as bigint[])) or right_identity_id = any(cast(:sids as bigint[]))""",
        """update golden_customer set name = null, name_pinyin = null, phone = null, email = null,
               birth_date = null, gender = null, member_no = null, province = null, city = null,
               district = null, address = null, lineage = '{}', erased_at = :now, updated_at = :now,
               status = case when id = cast(:customer as bigint) then 'erased' else status end
           where id = any(cast(:ids as bigint[]))""",
    )
    for sql in statements:
        await conn.execute(sa.text(sql), {**params, "customer": customer_id})
    await conn.execute(
        sa.text(
            "insert into audit_log (actor, actor_role, action, subject_type, subject_id, detail)"
            " values (:actor, null, 'customer.erased', 'customer', :c, cast(:detail as jsonb))"
        ),
        {
            "actor": actor[:100],
            "c": str(customer_id),
            "detail": json.dumps(
                {
                    "reason": reason,
                    "customers": customers,
                    "identities": len(identity_ids),
                    "suppressed": len(rows),
                    "quarantined_removed": removed,
                }  # fmt: skip
            ),
        },
    )
    return ErasureResult(customers, len(identity_ids), len(rows), int(removed))
