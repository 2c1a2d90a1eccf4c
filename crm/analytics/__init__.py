"""Customer analytics: measures, RFM, value tiers and ABC, lifecycle, portraits, tags, rule segments,
households and CLV.

Rules come from config/analytics.toml (crm.analytics.config); every step is set-based SQL
(crm.analytics.measures, .segments, .households) except the CLV model's fit (crm.analytics.clv).
"""

from __future__ import annotations

from crm.analytics.service import recompute

__all__ = ["recompute"]
