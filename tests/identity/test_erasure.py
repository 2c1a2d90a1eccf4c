"""The right to erasure: after erasing a person no text or JSON column of any table holds their phone,
e-mail, name or identifiers; orders keep their totals; their identifiers are suppressed (as keyed hashes);
a merge that involved them can no longer be undone; the erasure is audited and in the change feed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from identity.erasure import ErasureError, erase_customer, identifier_keys, suppressed
from identity.merge import MergeError, merge_customers, unmerge_event
from tests.crm.loyalty_support import add_customer, add_order, one

PHONE_NATIONAL = "13912345678"
PERSON = {
    "phone": "+86" + PHONE_NATIONAL,
    "email": "wang.fang@example.com",
    "name": "王芳芳",
    "unionid": "oUNION-wangfang-7",
    "tmall_id": "tb-wangfang-88",
    "app_id": "app-user-4711",
    "address": "南京西路1266号恒隆广场",
}


async def add_person(conn: AsyncConnection) -> dict[str, Any]:
    """A person seen on Tmall and in the app (two golden customers, then merged), with orders, a WeChat
    message naming their phone, a quarantined row, a complaint and a survey comment."""
    await conn.execute(
        sa.text(
            "insert into channel (code, family, name, trust_rank) values ('tmall', 'marketplace', 'Tmall', 50),"
            " ('app', 'own', 'App', 10) on conflict do nothing"
        )
    )
    a = await add_customer(conn, name=PERSON["name"], phone=PERSON["phone"], email=PERSON["email"],
                           address=PERSON["address"], city="上海市")  # fmt: skip
    b = await add_customer(conn, name=PERSON["name"], phone=PERSON["phone"])
    ids = {}
    for customer, channel, external in ((a, "tmall", PERSON["tmall_id"]), (b, "app", PERSON["app_id"])):
        ids[channel] = await one(
            conn,
            "insert into source_identity (channel_code, external_id, customer_id, raw, name, phone, email,"
            " wechat_unionid, address_detail, phone_verified)"
            " values (:ch, :ext, :c, cast(:raw as jsonb), :name, :phone, :email, :u, :addr, true) returning id",
            ch=channel, ext=external, c=customer, name=PERSON["name"], phone=PERSON["phone"],
            email=PERSON["email"], u=PERSON["unionid"], addr=PERSON["address"],
            raw=f'{{"buyer_nick": "{external}", "receiver_mobile": "{PHONE_NATIONAL}", '
                f'"receiver_name": "{PERSON["name"]}", "receiver_address": "{PERSON["address"]}"}}',
        )  # fmt: skip
    order = await add_order(conn, a, 25_800, datetime(2026, 11, 1, tzinfo=UTC), identity_id=ids["tmall"])
    await conn.execute(
        sa.text(
            "insert into interaction (channel_code, external_id, source_identity_id, customer_id, type, direction,"
            " occurred_at, summary, payload) values ('app', 'msg-1', :i, :c, 'message', 'inbound', now(), :s,"
            " cast(:p as jsonb))"
        ),
        {
            "i": ids["app"],
            "c": b,
            "s": f"请回电 {PHONE_NATIONAL}",
            "p": f'{{"text": "我是{PERSON["name"]}"}}',
        },
    )
    await conn.execute(
        sa.text(
            "insert into quarantine (channel_code, entity, external_id, payload_hash, raw, reason, errors, seen_count,"
            " first_seen_at, last_seen_at)"
            " values ('tmall', 'customer', 'q-1', 'h1', cast(:raw as jsonb), 'bad phone', '[]', 1, now(), now()),"
            " ('tmall', 'customer', 'q-2', 'h2', '{\"buyer_nick\": \"someone-else\"}', 'bad phone', '[]', 1,"
            " now(), now())"
        ),
        {"raw": f'{{"buyer_nick": "{PERSON["tmall_id"]}", "mobile": "{PHONE_NATIONAL}"}}'},
    )
    case = await one(
        conn,
        "insert into service_case (case_no, customer_id, type, status, priority, subject, description, opened_at)"
        " values ('C-1', :c, 'complaint', 'open', 'normal', :s, :d, now()) returning id",
        c=a, s=f"{PERSON['name']} 投诉", d=f"联系 {PERSON['email']}",
    )  # fmt: skip
    await conn.execute(
        sa.text("insert into case_event (case_id, kind, note, created_at) values (:k, 'note', :n, now())"),
        {"k": case, "n": f"called {PHONE_NATIONAL}"},
    )
    await conn.execute(
        sa.text(
            "insert into survey_response (customer_id, kind, score, comment, responded_at)"
            " values (:c, 'csat', 4, :t, now())"
        ),
        {"c": a, "t": f"地址 {PERSON['address']}"},
    )
    merged = await merge_customers(conn, [a, b], actor="staff:1", reason="same person")
    return {"survivor": merged.surviving_customer_id, "absorbed": b if merged.surviving_customer_id == a else a,
            "order": order, "merge_event": merged.merge_event_id}  # fmt: skip


async def text_columns(conn: AsyncConnection) -> list[tuple[str, str]]:
    return [
        (t, c)
        for t, c in (
            await conn.execute(
                sa.text(
                    "select table_name, column_name from information_schema.columns"
                    " where table_schema = 'public' and data_type in ('text', 'character varying', 'json', 'jsonb',"
                    " 'character', 'ARRAY') and table_name <> 'alembic_version'"
                )
            )
        ).all()
    ]


async def find_pii(conn: AsyncConnection, needles: list[str]) -> list[str]:
    """Every (table.column) in the database whose value contains one of `needles`."""
    found = []
    for table, column in await text_columns(conn):
        hit = await one(
            conn,
            f'select count(*) from "{table}" where exists (select 1 from unnest(cast(:n as text[])) n'  # noqa: S608
            f' where strpos(cast("{column}" as text), n) > 0)',
            n=needles,
        )
        if hit:
            found.append(f"{table}.{column}")
    return found


NEEDLES = [PHONE_NATIONAL, PERSON["email"], PERSON["name"], PERSON["unionid"], PERSON["tmall_id"],
           PERSON["app_id"], PERSON["address"]]  # fmt: skip


async def test_erasure_leaves_no_personal_data_in_any_table(conn: AsyncConnection) -> None:
    person = await add_person(conn)
    assert len(await find_pii(conn, NEEDLES)) >= 8  # the scan sees the data before

    result = await erase_customer(conn, person["survivor"], actor="staff:dpo", reason="PIPL request #42")

    assert sorted(result.customer_ids) == sorted([person["survivor"], person["absorbed"]])
    assert result.identities == 2 and result.quarantined_removed == 1
    assert await find_pii(conn, NEEDLES) == []
    # The other person's quarantined row is kept.
    assert await one(conn, "select count(*) from quarantine where external_id = 'q-2'") == 1
    # Orders keep their totals, for accounting; the customer row stays as an erased shell.
    assert await one(conn, "select paid_fen from orders where id = :o", o=person["order"]) == 25_800
    assert (
        await one(conn, "select status from golden_customer where id = :c", c=person["survivor"]) == "erased"
    )
    assert (
        await one(
            conn,
            "select count(*) from customer_change where customer_id = :c and kind = 'erased'",
            c=person["survivor"],
        )
        == 1
    )
    detail = await one(
        conn, "select detail from audit_log where action = 'customer.erased' and subject_id = :c",
        c=str(person["survivor"]),
    )  # fmt: skip
    assert detail["reason"] == "PIPL request #42" and detail["identities"] == 2
    # Nothing to give back: the merge that involved them cannot be undone.
    with pytest.raises(MergeError, match="erased"):
        await unmerge_event(conn, person["merge_event"], actor="staff:1")


async def test_the_suppression_list_recognizes_the_person_in_any_format_and_keeps_no_identifier(
    conn: AsyncConnection,
) -> None:
    person = await add_person(conn)
    result = await erase_customer(conn, person["survivor"], actor="staff:dpo", reason="request")
    assert result.suppressed >= 5  # two external ids, phone, e-mail, unionid
    # The list holds keyed hashes only.
    assert await find_pii(conn, [PHONE_NATIONAL, PERSON["email"], PERSON["tmall_id"]]) == []
    incoming = [
        *identifier_keys(channel="tmall", external_id=PERSON["tmall_id"]),
        *identifier_keys(phone="139 1234 5678"),
        *identifier_keys(email="Wang.Fang@Example.com"),
        *identifier_keys(channel="jd", external_id=PERSON["tmall_id"]),  # another channel's id space
        *identifier_keys(phone="13912345679"),
    ]
    hits = await suppressed(conn, incoming)
    assert hits == {
        ("external:tmall", PERSON["tmall_id"]),
        ("phone", PERSON["phone"]),
        ("email", PERSON["email"]),
    }


async def test_what_cannot_be_erased_is_refused_with_the_reason(conn: AsyncConnection) -> None:
    person = await add_person(conn)
    with pytest.raises(ErasureError, match="surviving customer"):
        await erase_customer(conn, person["absorbed"], actor="staff:dpo", reason="request")
    with pytest.raises(ErasureError, match="reason"):
        await erase_customer(conn, person["survivor"], actor="staff:dpo", reason=" ")
    with pytest.raises(ErasureError, match="does not exist"):
        await erase_customer(conn, 10**12, actor="staff:dpo", reason="request")
    await erase_customer(conn, person["survivor"], actor="staff:dpo", reason="request")
    with pytest.raises(ErasureError, match="already erased"):
        await erase_customer(conn, person["survivor"], actor="staff:dpo", reason="request")
