"""Consents: the one in force per purpose (the latest recorded)."""

from __future__ import annotations

from datetime import datetime

import strawberry


@strawberry.type
class Consent:
    purpose: str = strawberry.field(
        description="marketing_sms, marketing_wechat, marketing_email, profiling."
    )
    status: str = strawberry.field(description="granted or withdrawn.")
    source: str = strawberry.field(description="The channel that recorded it, or staff.")
    recorded_at: datetime
