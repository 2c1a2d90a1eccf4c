"""Incremental linking in PostgreSQL: same clusters as a full run, blocked values, review queue."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from identity.engine import resolve_frame
from identity.evaluate import pairwise_scores
from identity.linking import link_source_identities
from identity.model import reference_model
from identity.standardize import standardize_frame
from identity.synthetic import synthetic_people
from tests.identity.factories import create_channels, customer_of, land_identities


async def test_incremental_linking_matches_a_full_run(committed_db: AsyncEngine) -> None:
    records = synthetic_people(120, seed=7)
    std = standardize_frame(records)
    full = resolve_frame(std, model=reference_model(len(std)), sorted_neighbourhood=False, standardized=True)
    async with committed_db.begin() as conn:
        await create_channels(conn)
        ids = await land_identities(conn, std, standardized=True)
    touched: set[int] = set()
    for start in range(0, len(ids), 90):  # three sync runs
        report = await link_source_identities(committed_db, ids[start : start + 90])
        touched |= report.customers_touched
    async with committed_db.connect() as conn:
        assigned = await customer_of(conn, ids)
    incremental = [assigned[i] for i in ids]
    same = pairwise_scores(incremental, full.customer_ids)
    assert same.precision == 1.0 and same.recall == 1.0, same
    assert set(incremental) <= touched
    # A second linking run of the same identities changes nothing: ids are stable.
    again = await link_source_identities(committed_db, ids)
    async with committed_db.connect() as conn:
        assert await customer_of(conn, ids) == assigned
    assert again.created == 0 and again.merged == 0


async def test_new_identity_links_to_existing_customer_and_merges_with_evidence(
    committed_db: AsyncEngine,
) -> None:
    first = pd.DataFrame(
        [
            {
                "record_id": "a1",
                "source": "app",
                "name": "曾小明",
                "phone": "13912345678",
                "phone_verified": "1",
                "member_no": "M1",
            },
            {"record_id": "a2", "source": "wechat", "name": "曾小明", "wechat_unionid": "u-1"},
        ]
    )
    bridge = pd.DataFrame(
        [
            {
                "record_id": "a3",
                "source": "app",
                "name": "曾小明",
                "phone": "+86 139 1234 5678",
                "phone_verified": "1",
                "wechat_unionid": "u-1",
            }
        ]
    )
    async with committed_db.begin() as conn:
        await create_channels(conn)
        ids = await land_identities(conn, first)
    r1 = await link_source_identities(committed_db, ids)
    assert r1.created == 2 and r1.linked == 0  # nothing strong ties a1 and a2 yet
    async with committed_db.begin() as conn:
        (bridge_id,) = await land_identities(conn, bridge)
    r2 = await link_source_identities(committed_db, [bridge_id], actor="test")
    async with committed_db.connect() as conn:
        assigned = await customer_of(conn, [*ids, bridge_id])
        event = (
            await conn.execute(
                sa.text(
                    "select kind, surviving_customer_id, absorbed_customer_ids, evidence from merge_event"
                )
            )
        ).one()
        audit = (
            await conn.execute(
                sa.text("select rule, features from identity_link_audit where source_identity_id = :i"),
                {"i": bridge_id},
            )
        ).one()
        golden = (
            await conn.execute(sa.text("select status, merged_into from golden_customer order by id"))
        ).all()
    assert len(set(assigned.values())) == 1
    assert r2.merged == 1 and r2.linked == 1
    assert event[0] == "merge" and event[1] == min(r1.customers_touched)  # the oldest id survives
    assert event[3]["rule"] == "incremental_link"
    assert audit[0].startswith("rule:") and audit[1]
    assert [g[0] for g in golden] == ["active", "merged"]


async def test_blocked_values_never_link(committed_db: AsyncEngine) -> None:
    records = pd.DataFrame(
        [
            {
                "record_id": "p1",
                "source": "pos",
                "name": "王伟",
                "phone": "13800000000",
                "phone_verified": "1",
            },
            {
                "record_id": "p2",
                "source": "pos",
                "name": "李娜",
                "phone": "13800000000",
                "phone_verified": "1",
            },
            {"record_id": "p3", "source": "app", "name": "赵敏", "email": "test@test.com"},
            {"record_id": "p4", "source": "jd", "name": "孙丽", "email": "TEST@test.com"},
        ]
    )
    async with committed_db.begin() as conn:
        await create_channels(conn)
        ids = await land_identities(conn, records)
    report = await link_source_identities(committed_db, ids)
    async with committed_db.connect() as conn:
        assigned = await customer_of(conn, ids)
    assert report.created == 4 and len(set(assigned.values())) == 4


async def test_pairs_between_thresholds_go_to_review(committed_db: AsyncEngine) -> None:
    # A common name in the same city, but two birth dates, among a thousand other identities:
    # plausible, not certain.
    background = synthetic_people(600, seed=3).drop(columns=["true_person_id"])
    pair = pd.DataFrame(
        [
            {
                "record_id": "q1",
                "source": "app",
                "name": "张丽",
                "birth_date": "1990-05-06",
                "city": "杭州市",
                "phone": "13711112222",
            },
            {
                "record_id": "q2",
                "source": "pos",
                "name": "張麗",
                "birth_date": "1985-03-02",
                "address": "浙江省杭州市西湖区文三路1号",
            },
        ]
    )
    async with committed_db.begin() as conn:
        await create_channels(conn)
        background_ids = await land_identities(conn, background)
        ids = await land_identities(conn, pair)
    await link_source_identities(committed_db, background_ids)
    report = await link_source_identities(committed_db, ids)
    async with committed_db.connect() as conn:
        reviews = (
            await conn.execute(
                sa.text(
                    "select left_identity_id, right_identity_id, score, features from identity_review"
                    " where left_identity_id = any(:ids) or right_identity_id = any(:ids)"
                ),
                {"ids": ids},
            )
        ).all()
    assert report.queued_for_review == 1 and report.created == 2
    assert (reviews[0][0], reviews[0][1]) == (min(ids), max(ids)) and 0.5 <= reviews[0][2] < 0.92
    features = reviews[0][3]
    assert (features["name_hanzi"], features["city"], features["birth_date"]) == (
        "exact",
        "exact",
        "different",
    )


async def test_rows_landed_before_linking_follow_their_identity(committed_db: AsyncEngine) -> None:
    async with committed_db.begin() as conn:
        await create_channels(conn)
        (member,) = await land_identities(
            conn,
            pd.DataFrame(
                [
                    {
                        "record_id": "m",
                        "source": "app",
                        "name": "翟志刚",
                        "phone": "13512345678",
                        "phone_verified": "1",
                    }
                ]
            ),
        )
    first = await link_source_identities(committed_db, [member])
    async with committed_db.begin() as conn:
        (shopper,) = await land_identities(
            conn, pd.DataFrame([{"record_id": "s", "source": "pos", "phone": "135 1234 5678"}])
        )
        await conn.execute(
            sa.text(
                "insert into orders (channel_code, external_id, source_identity_id, status, placed_at, currency)"
                " values ('pos', 'T-1', :i, 'completed', now(), 'CNY')"
            ),
            {"i": shopper},
        )
    report = await link_source_identities(committed_db, [shopper])
    async with committed_db.connect() as conn:
        order_customer = (
            await conn.execute(sa.text("select customer_id from orders where external_id = 'T-1'"))
        ).scalar_one()
        audit = (
            await conn.execute(
                sa.text(
                    "select rule, score, features from identity_link_audit where source_identity_id = :i"
                ),
                {"i": shopper},
            )
        ).one()
    (customer,) = first.customers_touched
    assert report.linked == 1 and report.customers_touched == {customer}
    assert order_customer == customer
    assert audit[0] == "fellegi_sunter" and audit[1] >= 0.92 and audit[2]["phone"] == "exact"
