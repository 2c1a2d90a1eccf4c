"""Helpers for the service and care tests: the demo rules with overrides, a step that fills what a
transition requires, and a walk to any status of a flow."""

from __future__ import annotations

import tomllib
from collections import deque
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from crm.service.cases import CaseOpening, Resolution, Step, open_case, transition_case
from crm.service.config import CaseType, ServiceConfig, Transition
from infra.settings import PROJECT_ROOT
from tests.crm.loyalty_support import _merge


def rules(**overrides: Any) -> ServiceConfig:
    raw = tomllib.loads((PROJECT_ROOT / "config" / "service.toml").read_text(encoding="utf-8"))
    return ServiceConfig.model_validate(_merge(raw, overrides))


FILLED: dict[str, Any] = {
    "explanation": "the product was used beyond the warranty terms",
    "department": "quality",
    "cause": "a batch of duvet covers faded in the first wash",
    "responsible_party": "supplier Jiangsu Textiles",
    "resolution": Resolution(kind="compensation", compensation_fen=5000, points=300, note="apology"),
    "reason": "the customer asked again",
    "summary": "compensated and replaced",
}


def step_for(t: Transition, **extra: Any) -> Step:
    values: dict[str, Any] = {name: FILLED[name] for name in t.requires}
    values.update(extra)
    return Step(to=t.to, note=f"step {t.name}", **values)


def role_for(t: Transition) -> str:
    return "staff_admin" if t.role == "staff_admin" else "staff"


def path_to(ctype: CaseType, status: str) -> list[Transition]:
    """The shortest run of transitions from the initial status to `status`."""
    seen: dict[str, list[Transition]] = {ctype.initial: []}
    todo = deque([ctype.initial])
    while todo:
        here = todo.popleft()
        for t in ctype.allowed_from(here):
            if t.to not in seen:
                seen[t.to] = [*seen[here], t]
                todo.append(t.to)
    return seen[status]


async def new_case(
    conn: AsyncConnection,
    config: ServiceConfig,
    customer_id: int,
    type_code: str,
    now: datetime,
    **attrs: Any,
) -> int:
    opening = CaseOpening(customer_id=customer_id, type=type_code, subject=f"a {type_code}", **attrs)
    return int((await open_case(conn, config, opening, actor="staff:desk", now=now))["id"])


async def walk(
    conn: AsyncConnection, config: ServiceConfig, case_id: int, steps: list[Transition], now: datetime
) -> None:
    for n, t in enumerate(steps):
        await transition_case(
            conn, config, case_id, step_for(t), actor=f"{role_for(t)}:walker", role=role_for(t), now=now,
            key=f"walk-{case_id}-{n}",
        )  # fmt: skip
