"""The one place PII is masked. Staff see phones, e-mails, names, birthdays and street addresses masked
unless their token has the `pii:read` scope; a member sees their own data unmasked; every unmasked read by
staff or a service is recorded and written to the audit log when the request ends (schema.limits.AuditPII).
Province, city and district stay readable: segments and reports group by them."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from api.auth import PII_READ
from schema.context import Info

PII_FIELDS = frozenset({"name", "phone", "email", "birthday", "address", "nickname"})
_CN_MOBILE = re.compile(r"^\+861\d{10}$")


def mask_phone(value: str) -> str:
    if _CN_MOBILE.match(value):
        return f"{value[3:6]}****{value[-4:]}"
    return "****" + value[-4:] if len(value) > 4 else "****"


def mask_email(value: str) -> str:
    local, _, domain = value.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_name(value: str) -> str:
    """张伟 -> 张*, 欧阳娜娜 -> 欧***, Zhang Wei -> Z*** W**."""
    if re.search(r"[\u4e00-\u9fff]", value):
        return value[:1] + "*" * max(len(value) - 1, 1)
    return " ".join(part[:1] + "*" * max(len(part) - 1, 1) for part in value.split())


def mask_birthday(value: date | str) -> str:
    text = value.isoformat() if isinstance(value, date) else str(value)
    return text[:4] + "-**-**"


def mask(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field == "phone":
        return mask_phone(str(value))
    if field == "email":
        return mask_email(str(value))
    if field in ("name", "nickname"):
        return mask_name(str(value))
    if field == "birthday":
        return mask_birthday(value)
    if field == "address":
        return "***"
    return value


def can_read_pii(info: Info, customer_id: int | None) -> bool:
    principal = info.context.principal
    if principal.is_member:
        return customer_id is not None and principal.member_customer_id == customer_id
    return PII_READ in principal.scopes


def shown(info: Info, customer_id: int | None, field: str, value: Any) -> tuple[Any, bool]:
    """(value as this caller may see it, whether it is masked); records unmasked reads for the audit."""
    if value is None or field not in PII_FIELDS:
        return value, False
    if not can_read_pii(info, customer_id):
        return mask(field, value), True
    if not info.context.principal.is_member and customer_id is not None:
        info.context.pii_reads.setdefault(customer_id, set()).add(field)
    return value, False
