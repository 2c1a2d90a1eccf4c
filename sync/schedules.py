"""What `c360 sync serve` puts on a Prefect server: one deployment per enabled channel, the catalogue, and
the scheduled flows of the modules in SCHEDULE_MODULES (the CRM recomputations), each with its cron.

Restart safety lives here too: one run at a time per deployment (a run that would overlap is cancelled),
runs that piled up while `serve` was down collapsed into one catch-up run, deployments of disabled
channels removed, and an automation that marks a run Crashed when its heartbeats stop, so a run left
Running by a dead machine does not hold its deployment's slot forever.

Import this module only after `sync.prefect_setup.configure_prefect` has set Prefect's environment.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import Flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Cancelled

from sync.config import CHANNEL_CODES, SyncSettings
from sync.prefect_setup import ServeError

# Modules whose `SCHEDULES: list[tuple[Flow, str]]` `serve` registers beside the channels (a CRM package
# adds its flows module here when it lands).
SCHEDULE_MODULES: tuple[str, ...] = (
    "crm.loyalty.flows",
    "crm.analytics.flows",
    "crm.service.flows",
    "crm.care.flows",
)

# Cron times are the retailer's: "0 2 * * *" is 02:00 in Shanghai, not UTC.
TIMEZONE = "Asia/Shanghai"
DEPLOYMENT_SUFFIX = "scheduled"
# Each flow run sends a heartbeat this often (Prefect's minimum); a run silent for longer than
# C360_SYNC_HEARTBEAT_GRACE_SECONDS is marked Crashed.
HEARTBEAT_SECONDS = 30
ZOMBIE_AUTOMATION = "c360: crash flow runs whose heartbeats stopped"


@dataclass(frozen=True)
class Scheduled:
    """One flow on one cron, as a deployment named `<key>-scheduled`."""

    key: str
    flow: Flow[Any, Any]
    cron: str

    @property
    def deployment_name(self) -> str:
        return f"{self.key}-{DEPLOYMENT_SUFFIX}"


def scheduled_flows(settings: SyncSettings, all_cron: str | None = None) -> list[Scheduled]:
    """Every flow `serve` schedules, in order: enabled channels, the catalogue, the SCHEDULE_MODULES' flows
    (crons overridable by C360_SYNC_CRONS, keyed by flow name), and sync-all when `all_cron` is given."""
    from sync.flows import CHANNEL_FLOWS, sync_all, sync_catalog

    out = [
        Scheduled(c, CHANNEL_FLOWS[c], settings.channel(c).cron)
        for c in CHANNEL_CODES
        if settings.channel(c).enabled
    ]
    if settings.catalog_cron:
        out.append(Scheduled("catalog", sync_catalog, settings.catalog_cron))
    for module_name in SCHEDULE_MODULES:
        module = importlib.import_module(module_name)
        for flow, cron in module.SCHEDULES:
            out.append(Scheduled(flow.name, flow, settings.crons.get(flow.name, cron)))
    if all_cron:
        out.append(Scheduled("all", sync_all, all_cron))
    unknown = set(settings.crons) - {s.flow.name for s in out}
    if unknown:
        known = ", ".join(sorted(s.flow.name for s in out))
        raise ServeError(
            f"C360_SYNC_CRONS names no scheduled flow: {', '.join(sorted(unknown))} (known: {known})"
        )
    return out


def disabled_channels(settings: SyncSettings) -> list[str]:
    return [c for c in CHANNEL_CODES if not settings.channel(c).enabled]


def deployments(items: list[Scheduled]) -> list[Any]:
    """RunnerDeployments with their crons, one run at a time each: a run due while the previous one still
    runs is cancelled instead of queued behind it (the next one catches up from the watermark anyway)."""
    from prefect.schedules import Cron

    out = []
    for item in items:
        try:
            schedule = Cron(item.cron, timezone=TIMEZONE)
        except ValueError as exc:
            raise ServeError(f"{item.key}: bad cron {item.cron!r}: {exc}") from exc
        out.append(
            item.flow.to_deployment(
                name=item.deployment_name,
                schedule=schedule,
                # A restart serves again what the last stop paused (Prefect pauses on shutdown).
                paused=False,
                concurrency_limit=ConcurrencyLimitConfig(
                    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
                ),
            )
        )
    return out


async def prepare_server(
    client: PrefectClient,
    items: list[Scheduled],
    disabled: list[str],
    say: Callable[[str], None],
    heartbeat_grace: timedelta,
    now: datetime | None = None,
) -> None:
    """Before serving: remove disabled channels' deployments, collapse late runs, ensure the zombie
    automation. Idempotent: `serve` runs it on every start."""
    from sync.flows import CHANNEL_FLOWS

    now = now or datetime.now(UTC)
    for code in disabled:
        name = f"{CHANNEL_FLOWS[code].name}/{code}-{DEPLOYMENT_SUFFIX}"
        try:
            deployment = await client.read_deployment_by_name(name)
        except Exception:  # noqa: BLE001 - ObjectNotFound: nothing to remove
            continue
        await client.delete_deployment(deployment.id)
        say(f"removed deployment {name}: the channel is disabled")
    for item in items:
        name = f"{item.flow.name}/{item.deployment_name}"
        try:
            deployment = await client.read_deployment_by_name(name)
        except Exception:  # noqa: BLE001 - first start: nothing has piled up yet
            continue
        collapsed = await collapse_late_runs(client, deployment.id, now)
        if collapsed:
            say(f"{name}: {collapsed} late runs collapsed into one catch-up run")
    await ensure_zombie_automation(client, heartbeat_grace)


async def collapse_late_runs(client: PrefectClient, deployment_id: Any, now: datetime) -> int:
    """Cancel every scheduled run of a deployment that was due before `now` except the newest: after an
    outage one catch-up run (which reads from the watermark) does the work of all of them."""
    late = await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            expected_start_time=FlowRunFilterExpectedStartTime(before_=now),
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
    )
    for run in late[1:]:
        await client.set_flow_run_state(
            run.id, Cancelled(message="collapsed into one catch-up run after an outage"), force=True
        )
    return max(len(late) - 1, 0)


async def ensure_zombie_automation(client: PrefectClient, grace: timedelta) -> None:
    """An automation that marks a flow run Crashed when its heartbeats stop (the machine running it died):
    otherwise it stays Running and holds its deployment's one-run slot forever."""
    from prefect.automations import Automation
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    for existing in await client.read_automations_by_name(ZOMBIE_AUTOMATION):
        trigger = existing.trigger
        if isinstance(trigger, EventTrigger) and trigger.within == grace:
            return
        await client.delete_automation(existing.id)  # the grace changed: replace it
    automation = Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=grace,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED, message="no heartbeat: the process running this flow run died"
            )
        ],
    )
    await automation.acreate()
