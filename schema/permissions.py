"""Who may resolve what. Every field that needs it declares a permission class; member tokens are
limited to their own customer by `customer_visible`, which every customer-scoped resolver calls."""

from __future__ import annotations

from typing import Any

from strawberry.permission import BasePermission

from api.auth import Principal
from schema.context import Info
from schema.errors import BadInput, Forbidden
from schema.relay import int_id

STAFF_OR_SERVICE = ("staff", "staff_admin", "service")


def principal(info: Any) -> Principal:
    p: Principal = info.context.principal
    return p


class IsStaff(BasePermission):
    """staff and staff_admin (consoles, service desks)."""

    message = "staff only"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return principal(info).is_staff


class IsStaffOrService(BasePermission):
    """staff, staff_admin and service (sync jobs reading the unified profile)."""

    message = "staff or service only"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return principal(info).role in STAFF_OR_SERVICE


class IsStaffAdmin(BasePermission):
    """staff_admin only: merges, unmerges, adjustments, erasure."""

    message = "staff_admin only"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return principal(info).role == "staff_admin"


class IsMember(BasePermission):
    message = "member tokens only"
    error_extensions = {"code": "FORBIDDEN"}

    def has_permission(self, source: Any, info: Any, **kwargs: Any) -> bool:
        return principal(info).is_member


def customer_visible(info: Info, customer_id: int) -> bool:
    """A member sees only their own customer; other roles see every customer."""
    p = info.context.principal
    return not p.is_member or p.member_customer_id == customer_id


def require_customer(info: Info, customer_id: int) -> None:
    if not customer_visible(info, customer_id):
        raise Forbidden("a member token can read only its own customer")


def acting_customer(info: Info, customer_id: str | None) -> int:
    """The customer a mutation acts on: a member acts on themselves only; staff and service name one."""
    p = info.context.principal
    if p.is_member:
        own = p.member_customer_id
        assert own is not None
        if customer_id is not None and int_id(customer_id, "Customer") != own:
            raise Forbidden("a member token acts only on its own customer")
        return own
    if p.role not in STAFF_OR_SERVICE:
        raise Forbidden("not allowed")
    if customer_id is None:
        raise BadInput("customerId is required", field="customerId")
    return int_id(customer_id, "Customer")
