"""updateConsent and updateCustomerProfile: what a person (a member, or staff for them) changes about a
golden customer by hand.

A consent is appended, never overwritten: the history is kept and the newest row per purpose is the one
in force. A profile correction by staff_admin is written to the golden record with lineage rule
`manual` and its actor; survivorship keeps it over what any channel says later
(`identity.survivorship.keep_manual`), and each changed attribute gets an audit_log row that names the
field, never the value."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pandas as pd
import sqlalchemy as sa
import strawberry

from identity.standardize import standardize_frame
from identity.survivorship import MANUAL_RULE
from schema.consent import Consent
from schema.context import Info
from schema.customer import Customer, current_customers, load_customer
from schema.errors import BadInput, UserError
from schema.merges_mutations import audit_customer
from schema.permissions import IsStaffAdmin, acting_customer
from schema.relay import int_id

# A consent purpose or source: a code such as marketing_sms, app, staff.
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@strawberry.input
class UpdateConsentInput:
    purpose: str = strawberry.field(description="marketing_sms, marketing_wechat, profiling, ...")
    status: str = strawberry.field(description="granted or withdrawn.")
    source: str = strawberry.field(description="Where it was given: app, store, staff, ...")
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Required for staff and services; a member updates their own."
    )


@strawberry.type
class UpdateConsentPayload:
    consent: Consent | None = strawberry.field(description="The row recorded (now the one in force).")
    customer: Customer | None
    user_errors: list[UserError]


async def update_consent(info: Info, input: UpdateConsentInput) -> UpdateConsentPayload:
    asked = acting_customer(info, input.customer_id)
    errors = [
        UserError(field=[name], message=message, code="INVALID")
        for name, ok, message in (
            ("purpose", bool(_CODE.match(input.purpose)), "a purpose is a code such as marketing_sms"),
            ("status", input.status in ("granted", "withdrawn"), "status is granted or withdrawn"),
            ("source", bool(_CODE.match(input.source)), "a source is a code such as app or staff"),
        )
        if not ok
    ]
    if errors:
        return UpdateConsentPayload(consent=None, customer=None, user_errors=errors)
    principal = info.context.principal
    async with info.context.engine.begin() as conn:
        now = (await current_customers(conn, {asked})).get(asked)
        if now is None or now[1] != "active":
            return UpdateConsentPayload(consent=None, customer=None, user_errors=[
                UserError(field=["customerId"], message="no active customer has this id", code="NOT_FOUND")])  # fmt: skip
        customer_id = now[0]
        row = (
            await conn.execute(
                sa.text(
                    "insert into consent (customer_id, purpose, status, source, recorded_at)"
                    " values (:c, :p, :s, :src, clock_timestamp()) returning purpose, status, source, recorded_at"
                ),
                {"c": customer_id, "p": input.purpose, "s": input.status, "src": input.source},
            )
        ).one()
        await audit_customer(conn, principal.actor, principal.role, "consent.update", customer_id,
                     {"purpose": input.purpose, "status": input.status, "source": input.source})  # fmt: skip
    info.context.loaders.consents.clear_all()
    return UpdateConsentPayload(
        consent=Consent(purpose=row[0], status=row[1], source=row[2], recorded_at=row[3]),
        customer=await load_customer(info, customer_id),
        user_errors=[],
    )


@strawberry.input(description="The attributes to correct; those left out (or null) stay as they are.")
class UpdateCustomerProfileInput:
    customer_id: strawberry.ID
    reason: str = strawberry.field(description="Why (a ticket, the customer's call); kept in the audit log.")
    name: str | None = None
    gender: str | None = strawberry.field(default=None, description="M or F (also 男/女, male/female).")
    birthday: str | None = strawberry.field(default=None, description="YYYY-MM-DD or 1990年1月2日 ...")
    email: str | None = None
    phone: str | None = strawberry.field(default=None, description="In any format a person types.")
    province: str | None = None
    city: str | None = None
    district: str | None = None
    address: str | None = strawberry.field(default=None, description="The street address.")


@strawberry.type
class UpdateCustomerProfilePayload:
    customer: Customer | None
    changed: list[str] = strawberry.field(description="The attributes whose value changed.")
    user_errors: list[UserError]


# input field -> (golden_customer column, standardize_frame column, the column's width)
_PROFILE_FIELDS: dict[str, tuple[str, str, int]] = {
    "name": ("name", "name", 100),
    "gender": ("gender", "gender", 1),
    "birthday": ("birth_date", "birth_date", 10),
    "email": ("email", "email", 254),
    "phone": ("phone", "phone", 20),
    "province": ("province", "province", 32),
    "city": ("city", "city", 32),
    "district": ("district", "district", 32),
    "address": ("address", "address_detail", 300),
}
_REGION = ("province", "city", "district")


def standardized_profile(given: dict[str, str]) -> tuple[dict[str, Any], list[UserError]]:
    """The given values as sync stores them (identity.standardize.standardize_frame, the standardizer sync
    lands identities with): golden column -> value, and a userError for each value it cannot read."""
    inputs = {("birth_date" if f == "birthday" else f): v for f, v in given.items()}
    frame = standardize_frame(pd.DataFrame([{"record_id": "0", "source": "staff", **inputs}]))
    out = frame.astype(object).where(frame.notna(), None).to_dict("records")[0]
    values: dict[str, Any] = {}
    errors: list[UserError] = []
    for field in given:
        column, std, width = _PROFILE_FIELDS[field]
        value = out.get(std)
        if value is None:
            errors.append(UserError(field=[field], message=f"not a valid {field}", code="INVALID"))
        elif isinstance(value, str) and len(value) > width:
            errors.append(UserError(field=[field], message=f"{field} is longer than {width}", code="INVALID"))
        else:
            values[column] = value
    if "name" in values:
        values["name_pinyin"] = out.get("name_pinyin")
    if "address" in given:
        # A whole Chinese address line: its parts, where not given on their own, come with it (as in sync).
        for part in _REGION:
            if part not in given and out.get(part) is not None:
                values[part] = out[part]
    return values, errors


async def update_customer_profile(
    info: Info, input: UpdateCustomerProfileInput
) -> UpdateCustomerProfilePayload:
    def refused(field: str, message: str, code: str) -> UpdateCustomerProfilePayload:
        return UpdateCustomerProfilePayload(customer=None, changed=[],
                                            user_errors=[UserError(field=[field], message=message, code=code)])  # fmt: skip

    try:
        asked = int_id(input.customer_id, "Customer")
    except BadInput as exc:
        return refused("customerId", exc.message, "BAD_ID")
    if not input.reason.strip():
        return refused("reason", "say why the profile is corrected", "INVALID")
    given = {f: v.strip() for f in _PROFILE_FIELDS if (v := getattr(input, f)) is not None and v.strip()}
    if not given:
        return refused("customerId", "give at least one attribute to correct", "NOTHING_TO_CHANGE")
    values, errors = standardized_profile(given)
    if errors:
        return UpdateCustomerProfilePayload(customer=None, changed=[], user_errors=errors)
    principal = info.context.principal
    now = datetime.now(UTC)
    async with info.context.engine.begin() as conn:
        found = (await current_customers(conn, {asked})).get(asked)
        if found is None or found[1] != "active":
            return refused("customerId", "no active customer has this id", "NOT_FOUND")
        customer_id = found[0]
        columns = sorted(values)
        select_current = f"select {', '.join(columns)}, lineage from golden_customer where id = :c for update"  # noqa: S608 - fixed column names
        current = (
            (
                await conn.execute(
                    sa.text(select_current),
                    {"c": customer_id},
                )
            )
            .one()
            ._mapping
        )
        changed = [c for c in columns if current[c] != values[c]]
        if changed:
            lineage = dict(current["lineage"] or {})
            for column in changed:
                lineage[column] = {"rule": MANUAL_RULE, "actor": principal.actor, "channel": None,
                                   "source_identity_id": None, "observed_at": now.isoformat()}  # fmt: skip
            await conn.execute(
                sa.text(
                    f"update golden_customer set {', '.join(f'{c} = :{c}' for c in changed)},"  # noqa: S608 - fixed column names
                    " lineage = cast(:lineage as jsonb), updated_at = now() where id = :id"
                ),
                {
                    **{c: values[c] for c in changed},
                    "lineage": orjson.dumps(lineage).decode(),
                    "id": customer_id,
                },
            )
            # One row per attribute: the field's name and the reason, never the old or new value.
            for column in (c for c in changed if c != "name_pinyin"):
                await audit_customer(conn, principal.actor, principal.role, "customer.correct", customer_id,
                             {"field": column, "reason": input.reason})  # fmt: skip
    info.context.loaders.customer.clear_all()
    return UpdateCustomerProfilePayload(
        customer=await load_customer(info, customer_id),
        changed=[c for c in changed if c != "name_pinyin"],
        user_errors=[],
    )


@strawberry.type
class Mutation:
    update_consent: UpdateConsentPayload = strawberry.field(
        resolver=update_consent,
        description="Record a consent decision (appended; the newest per purpose is in force). A member "
        "updates their own; staff and services any customer's.",
    )
    update_customer_profile: UpdateCustomerProfilePayload = strawberry.field(
        resolver=update_customer_profile, permission_classes=[IsStaffAdmin],
        description="A staff correction: wins survivorship over every channel (lineage rule manual), audited.",
    )  # fmt: skip
