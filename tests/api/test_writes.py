"""The write mutations of #17 over HTTP: recording interactions of channels without a connector, consents,
staff corrections of a profile (which win survivorship), and the dry run of a merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from gql.transport.exceptions import TransportQueryError
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.relay import to_global_id
from tests.api.graphql_support import api_server
from tests.api.seed import seed
from tests.conftest import fetch_rows

RECORD = """mutation ($x: RecordInteractionInput!) { recordInteraction(input: $x) {
  interaction { id channel externalId type direction occurredAt summary } replayed
  userErrors { field message code } } }"""
RECORD_MANY = """mutation ($items: [RecordInteractionInput!]!) { recordInteractions(input: {items: $items}) {
  interactions { channel externalId type summary } recorded replayed userErrors { field message code } } }"""
TIMELINE = """query ($id: ID!) { customer(id: $id) { interactions(first: 50, filter: {channel: "callcenter"}) {
  totalCount edges { node { externalId type summary } } } } }"""


def gid(pk: int) -> str:
    return to_global_id("Customer", pk)


async def add_callcenter(engine: AsyncEngine) -> None:
    """A channel without a connector, registered as an operator would."""
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "insert into channel (code, family, name, trust_rank) values ('callcenter', 'own', 'Call centre', 40)"
            )
        )


async def test_record_interaction_is_idempotent_on_the_channels_id(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    await add_callcenter(committed_db)
    at = "2026-11-02T09:30:00+08:00"
    call = {"channel": "callcenter", "externalId": "call-1", "type": "call", "occurredAt": at,
            "customerId": gid(s.zhang), "summary": "asked about delivery", "payload": {"agent": "a7"}}  # fmt: skip
    with api_server(database_url) as api:
        first = (await api.query(RECORD, role="service", subject="cc-export", x=call))["recordInteraction"]
        # The same call sent again, with other content: the stored row answers, nothing changes.
        again = (await api.query(RECORD, role="staff", x={**call, "summary": "changed", "type": "visit"}))[
            "recordInteraction"
        ]
        # By an identifier, the way customerByIdentifier takes one (a phone as a person types it).
        by_phone = (
            await api.query(
                RECORD,
                x={
                    **call,
                    "externalId": "call-2",
                    "customerId": None,
                    "identifier": {"kind": "PHONE", "value": "+86 139-0000-1111"},
                },
            )
        )["recordInteraction"]
        # A merged customer's id records on the survivor.
        merged = (await api.query(RECORD, x={**call, "externalId": "call-3", "customerId": gid(s.absorbed)}))[
            "recordInteraction"
        ]
        timeline = (await api.query(TIMELINE, id=gid(s.zhang)))["customer"]["interactions"]
        with pytest.raises(TransportQueryError) as member:
            await api.query(RECORD, role="member", subject=str(s.zhang), x={**call, "externalId": "m"})
    assert first["userErrors"] == [] and first["replayed"] is False
    assert first["interaction"]["externalId"] == "call-1" and first["interaction"]["type"] == "call"
    assert datetime.fromisoformat(first["interaction"]["occurredAt"]) == datetime.fromisoformat(at)
    assert again == {**first, "replayed": True}
    assert by_phone["userErrors"] == [] and by_phone["replayed"] is False
    assert merged["userErrors"] == []
    assert timeline["totalCount"] == 2
    assert {e["node"]["externalId"] for e in timeline["edges"]} == {"call-1", "call-3"}
    assert member.value.errors and member.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    rows = await fetch_rows(
        committed_db,
        "select external_id, customer_id, type, summary, payload->>'agent' from interaction"
        " where channel_code = 'callcenter' order by external_id",
    )
    assert rows == [
        ("call-1", s.zhang, "call", "asked about delivery", "a7"),
        ("call-2", s.li, "call", "asked about delivery", "a7"),
        ("call-3", s.zhang, "call", "asked about delivery", "a7"),
    ]


async def test_a_batch_lands_its_good_items_and_names_the_bad_ones_by_index(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    await add_callcenter(committed_db)
    ok = {"channel": "callcenter", "type": "call", "occurredAt": "2026-11-02T09:30:00+08:00",
          "customerId": gid(s.zhang)}  # fmt: skip
    future = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    items = [
        {**ok, "externalId": "b-0"},
        {**ok, "externalId": "b-1", "occurredAt": future},
        {**ok, "externalId": "b-2", "channel": "fax"},
        {**ok, "externalId": "b-3", "direction": "sideways"},
        {**ok, "externalId": "b-4", "customerId": None, "identifier": {"kind": "EMAIL", "value": "nobody@x.cn"}},
        {**ok, "externalId": "b-5", "customerId": None},
        {**ok, "externalId": "b-6", "customerId": None, "identifier": {"kind": "EXTERNAL_ID", "value": "tmall:buyer-zw"}},
        {**ok, "externalId": "b-0", "summary": "the same key twice in one call"},
        {**ok, "externalId": "x" * 129},
    ]  # fmt: skip
    with api_server(database_url) as api:
        batch = (await api.query(RECORD_MANY, role="service", subject="cc", items=items))[
            "recordInteractions"
        ]
        replay = (await api.query(RECORD_MANY, role="service", subject="cc", items=items))[
            "recordInteractions"
        ]
        too_many = (await api.query(RECORD_MANY, items=[{**ok, "externalId": f"n{i}"} for i in range(501)]))[
            "recordInteractions"
        ]
    errors = {tuple(e["field"]): e["code"] for e in batch["userErrors"]}
    assert errors == {
        ("items", "1", "occurredAt"): "INVALID",
        ("items", "2", "channel"): "UNKNOWN_CHANNEL",
        ("items", "3", "direction"): "INVALID",
        ("items", "4", "identifier"): "NOT_FOUND",
        ("items", "5", "customerId"): "CUSTOMER_REQUIRED",
        ("items", "8", "externalId"): "INVALID",
    }
    assert [i and i["externalId"] for i in batch["interactions"]] == [
        "b-0", None, None, None, None, None, "b-6", "b-0", None,
    ]  # fmt: skip
    assert batch["interactions"][7]["summary"] is None  # the first of the key was stored
    assert (batch["recorded"], batch["replayed"]) == (2, 1)
    assert replay["interactions"] == batch["interactions"] and (replay["recorded"], replay["replayed"]) == (
        0,
        3,
    )
    assert too_many["userErrors"][0]["code"] == "TOO_MANY" and too_many["recorded"] == 0
    rows = await fetch_rows(
        committed_db,
        "select external_id, customer_id from interaction where channel_code = 'callcenter' order by 1",
    )
    assert rows == [("b-0", s.zhang), ("b-6", s.zhang)]


CONSENT = """mutation ($a: ID, $p: String!, $s: String!, $src: String!) {
  updateConsent(input: {customerId: $a, purpose: $p, status: $s, source: $src}) {
    consent { purpose status source recordedAt } customer { customerId consents { purpose status source } }
    userErrors { field message code } } }"""


async def test_update_consent_appends_and_the_newest_is_in_force(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    sms: dict[str, Any] = {"p": "marketing_sms", "src": "app"}
    with api_server(database_url) as api:
        # The member, for themselves (no id needed): the seeded withdrawal is overruled.
        own = (await api.query(CONSENT, role="member", subject=str(s.zhang), s="granted", **sms))[
            "updateConsent"
        ]
        with pytest.raises(TransportQueryError) as other:
            await api.query(CONSENT, role="member", subject=str(s.zhang), a=gid(s.li), s="granted", **sms)
        # Staff on the phone for li; a service job for a merged id (lands on its survivor).
        staff = (await api.query(CONSENT, a=gid(s.li), s="withdrawn", p="profiling", src="staff"))[
            "updateConsent"
        ]
        merged = (
            await api.query(CONSENT, role="service", subject="crm", a=gid(s.absorbed), s="withdrawn", **sms)
        )["updateConsent"]
        bad = (await api.query(CONSENT, a=gid(s.li), s="maybe", p="Marketing SMS!", src="staff"))[
            "updateConsent"
        ]
    assert own["userErrors"] == [] and own["consent"]["status"] == "granted"
    assert {"purpose": "marketing_sms", "status": "granted", "source": "app"} in own["customer"]["consents"]
    assert other.value.errors and other.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert staff["customer"]["consents"] == [
        {"purpose": "profiling", "status": "withdrawn", "source": "staff"}
    ]
    assert merged["customer"]["customerId"] == s.zhang
    assert {"purpose": "marketing_sms", "status": "withdrawn", "source": "app"} in merged["customer"][
        "consents"
    ]
    assert {tuple(e["field"]) for e in bad["userErrors"]} == {("status",), ("purpose",)}
    # The history is kept: the two seeded rows and the two new ones, oldest first.
    history = await fetch_rows(
        committed_db,
        "select status from consent where customer_id = :c and purpose = 'marketing_sms' order by recorded_at, id",
        c=s.zhang,
    )
    assert history == [("granted",), ("withdrawn",), ("granted",), ("withdrawn",)]
    audited = await fetch_rows(
        committed_db,
        "select actor, detail->>'status' from audit_log where action = 'consent.update' order by id",
    )
    assert audited == [
        (f"member:{s.zhang}", "granted"),
        ("staff:tester", "withdrawn"),
        ("service:crm", "withdrawn"),
    ]


PROFILE = """mutation ($x: UpdateCustomerProfileInput!) { updateCustomerProfile(input: $x) {
  changed userErrors { field message code } customer { customerId } } }"""
READ = """query ($id: ID!) { customer(id: $id) {
  name { value source { channel rule actor } } phone { value source { rule actor } } city { value source { rule } }
  birthday { value } gender { value } email { value source { rule } } } }"""


async def test_a_staff_correction_wins_survivorship_over_later_syncs(
    committed_db: AsyncEngine, database_url: str
) -> None:
    from sync.identities import link_identities

    s = await seed(committed_db)
    fix = {"customerId": gid(s.zhang), "reason": "ticket 42: customer called", "name": "張偉強",
           "phone": "+86 139-8888-7777", "city": "宁波", "birthday": "1988年3月6日", "gender": "男"}  # fmt: skip
    with api_server(database_url) as api:
        with pytest.raises(TransportQueryError) as staff:
            await api.query(PROFILE, x=fix)
        bad = (
            await api.query(
                PROFILE, role="staff_admin", subject="bob", x={**fix, "phone": "12345", "email": "no"}
            )
        )["updateCustomerProfile"]
        done = (await api.query(PROFILE, role="staff_admin", subject="bob", x=fix))["updateCustomerProfile"]
        again = (await api.query(PROFILE, role="staff_admin", subject="bob", x=fix))["updateCustomerProfile"]
        corrected = (await api.query(READ, scopes=["pii:read"], id=gid(s.zhang)))["customer"]
        # The corrected phone finds the customer, though no channel has reported it yet.
        found = await api.query(
            '{ customerByIdentifier(kind: PHONE, value: "139 8888 7777") { customerId } }'
        )
        # A later sync: the tmall buyer reports another name and a verified phone, the app a new e-mail.
        async with committed_db.begin() as conn:
            await conn.execute(
                sa.text(
                    "update source_identity set name = '王五', phone = '+8613700000000', phone_verified = true,"
                    " source_updated_at = now() where id = :t"
                ),
                {"t": s.zhang_tmall_identity},
            )
            await conn.execute(
                sa.text("update source_identity set email = 'zw.new@163.com', source_updated_at = now()"
                        " where channel_code = 'app' and customer_id = :c"),
                {"c": s.zhang},
            )  # fmt: skip
        await link_identities(committed_db, {s.zhang_tmall_identity}, pending=False)
        synced = (await api.query(READ, scopes=["pii:read"], id=gid(s.zhang)))["customer"]
    assert staff.value.errors and staff.value.errors[0]["extensions"]["code"] == "FORBIDDEN"
    assert {tuple(e["field"]): e["code"] for e in bad["userErrors"]} == {
        ("phone",): "INVALID",
        ("email",): "INVALID",
    }
    assert bad["customer"] is None
    assert done["userErrors"] == [] and sorted(done["changed"]) == [
        "birth_date",
        "city",
        "gender",
        "name",
        "phone",
    ]
    assert found == {"customerByIdentifier": {"customerId": s.zhang}}
    assert again["changed"] == []  # the same correction twice changes nothing more
    # Normalised as sync does: simplified Chinese, E.164, the city's official form, ISO date, m/f.
    assert corrected["name"] == {
        "value": "张伟强",
        "source": {"channel": None, "rule": "manual", "actor": "staff_admin:bob"},
    }
    assert corrected["phone"] == {
        "value": "+8613988887777",
        "source": {"rule": "manual", "actor": "staff_admin:bob"},
    }
    assert corrected["city"] == {"value": "宁波市", "source": {"rule": "manual"}}
    assert (corrected["birthday"]["value"], corrected["gender"]["value"]) == ("1988-03-06", "m")
    # The sync ran survivorship: the e-mail nobody corrected follows the channel, the corrections stay.
    assert synced["email"]["value"] == "zw.new@163.com" and synced["email"]["source"]["rule"] != "manual"
    assert synced["name"] == corrected["name"] and synced["phone"] == corrected["phone"]
    assert synced["city"] == corrected["city"]
    audit = await fetch_rows(
        committed_db,
        "select actor, detail->>'field', detail::text from audit_log where action = 'customer.correct' order by id",
    )
    assert sorted(a[1] for a in audit) == ["birth_date", "city", "gender", "name", "phone"]
    assert {a[0] for a in audit} == {"staff_admin:bob"}
    # The audit names fields, never values.
    assert not any(v in a[2] for a in audit for v in ("8888", "7777", "张伟强", "宁波", "1988"))


DRY = """mutation ($ids: [ID!]!) { mergeCustomers(input: {customerIds: $ids, reason: "same person",
  idempotencyKey: "dry", dryRun: true}) {
  customer { customerId } mergeEventId userErrors { field code message }
  dryRun { survivor { customerId } absorbedCustomerIds changes { field before after masked }
           moves { identities orders interactions consents serviceCases pointsEntries surveyResponses } } } }"""
MERGE = """mutation ($ids: [ID!]!) { mergeCustomers(input: {customerIds: $ids, reason: "same person",
  idempotencyKey: "real"}) { customer { customerId orderCount } userErrors { code } } }"""
AFTER = """query ($id: ID!) { customer(id: $id) { name { value } gender { value } birthday { value }
  phone { value } email { value } province { value } city { value } district { value } address { value }
  memberNo { value } } }"""


async def test_a_merge_dry_run_answers_what_the_merge_then_does_and_changes_nothing(
    committed_db: AsyncEngine, database_url: str
) -> None:
    s = await seed(committed_db)
    state = (
        "select (select count(*) from merge_event), (select count(*) from audit_log where action <> 'pii.read'),"
        " (select array_agg(row(g.*)::text order by id) from golden_customer g)"
    )
    ids = [gid(s.zhang), gid(s.li)]
    admin = {"role": "staff_admin", "subject": "bob"}
    with api_server(database_url) as api:
        fix = {"customerId": gid(s.zhang), "city": "宁波", "reason": "moved"}
        await api.query(PROFILE, x=fix, **admin)  # type: ignore[arg-type]
        before = await fetch_rows(committed_db, state)
        masked = (await api.query(DRY, ids=ids, **admin))["mergeCustomers"]  # type: ignore[arg-type]
        dry = (await api.query(DRY, ids=ids, scopes=["pii:read"], **admin))["mergeCustomers"]  # type: ignore[arg-type]
        refused = (await api.query(DRY, ids=[gid(s.absorbed), gid(s.li)], **admin))["mergeCustomers"]  # type: ignore[arg-type]
        unchanged = await fetch_rows(committed_db, state)
        merged = (await api.query(MERGE, ids=ids, **admin))["mergeCustomers"]  # type: ignore[arg-type]
        after = (await api.query(AFTER, scopes=["pii:read"], id=gid(s.zhang)))["customer"]
    assert dry["userErrors"] == [] and dry["customer"] is None and dry["mergeEventId"] is None
    plan = dry["dryRun"]
    assert plan["survivor"] == {"customerId": s.zhang} and plan["absorbedCustomerIds"] == [gid(s.li)]
    assert plan["moves"] == {"identities": 1, "orders": 1, "interactions": 0, "consents": 0, "serviceCases": 0,
                             "pointsEntries": 0, "surveyResponses": 0}  # fmt: skip
    assert unchanged == before  # nothing written: no event, no audit row, the same golden records
    assert refused["userErrors"][0]["code"] == "CANNOT_MERGE" and refused["dryRun"] is None
    # The plan is what the merge then does: each change's `after` is the survivor's value afterwards, and
    # every attribute not in the plan is as it was (the staff correction of the city among them).
    assert merged["userErrors"] == [] and merged["customer"]["orderCount"] == 2 + plan["moves"]["orders"]
    changes = {c["field"]: c for c in plan["changes"]}
    assert changes and "city" not in changes and after["city"]["value"] == "宁波市"
    for field, change in changes.items():
        assert after[field]["value"] == change["after"], field
        assert change["before"] != change["after"] and change["masked"] is False
    # Without pii:read the same plan, masked where the value is personal.
    assert [c["field"] for c in masked["dryRun"]["changes"]] == list(changes)
    assert {"birthday", "address"} <= set(changes)
    assert all(c["masked"] for c in masked["dryRun"]["changes"] if c["field"] in ("birthday", "address"))
