"""Source identities: the person as each channel knows them, with how they were linked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from schema.context import Info
from schema.masking import shown
from schema.relay import Node, to_global_id


@strawberry.type(description="A person as one channel knows them; PII masked as on Customer.")
class SourceIdentity(Node):
    channel: str
    external_id: str
    name: str | None
    nickname: str | None
    phone: str | None
    phone_masked: str | None = strawberry.field(description="A marketplace's own mask (138****5678).")
    phone_verified: bool
    email: str | None
    member_no: str | None
    wechat_unionid: str | None
    province: str | None
    city: str | None
    district: str | None
    link_rule: str | None = strawberry.field(description="The rule or model that linked it.")
    link_score: float | None
    linked_at: datetime | None
    source_updated_at: datetime | None


def identity_node(info: Info, r: dict[str, Any]) -> SourceIdentity:
    cid = r["customer_id"]

    def pii(field: str, value: Any) -> Any:
        return shown(info, cid, field, value)[0]

    return SourceIdentity(
        id=to_global_id("SourceIdentity", r["id"]),
        channel=r["channel_code"],
        external_id=r["external_id"],
        name=pii("name", r["name"]),
        nickname=pii("nickname", r["nickname"]),
        phone=pii("phone", r["phone"]),
        phone_masked=r["phone_masked"],
        phone_verified=r["phone_verified"],
        email=pii("email", r["email"]),
        member_no=r["member_no"],
        wechat_unionid=r["wechat_unionid"],
        province=r["province"],
        city=r["city"],
        district=r["district"],
        link_rule=r["link_rule"],
        link_score=r["link_score"],
        linked_at=r["linked_at"],
        source_updated_at=r["source_updated_at"],
    )
