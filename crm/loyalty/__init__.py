"""Loyalty: points (earn, pending, refunds, redemption, expiry), tiers, coupons, campaigns, referrals.

Rules come from config/loyalty.toml (crm.loyalty.config); the engine is set-based SQL (crm.loyalty.engine,
crm.loyalty.tiers, crm.loyalty.campaigns); one customer's operations are in crm.loyalty.service.
"""

from __future__ import annotations

from crm.loyalty.service import recompute

__all__ = ["recompute"]
