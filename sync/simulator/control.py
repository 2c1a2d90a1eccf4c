"""Fault injection, the clock and the ground truth: the `/_sim` endpoints, and the guard every
channel route passes through."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from sync.simulator.config import ORDER_CHANNELS
from sync.simulator.dataset import truth_frame
from sync.simulator.formats import iso
from sync.simulator.orders import FINISHED, PAID, REFUND_ASKED, REFUNDED, SHIPPED
from sync.simulator.state import FAULT_KINDS, Fault, SimulatorState
from sync.simulator.trading_hours import HORIZON_DAYS

STAGE_NAMES = {
    PAID: "paid",
    SHIPPED: "shipped",
    FINISHED: "finished",
    REFUND_ASKED: "refund_asked",
    REFUNDED: "refunded",
}
Handler = Callable[[Request, SimulatorState], Awaitable[Response]]
ErrorEnvelope = Callable[[Request, str | None], Response]


def state_of(request: Request) -> SimulatorState:
    """The simulator state the app was built with."""
    state: SimulatorState = request.app.state.simulator
    return state


def malformed_requested(request: Request) -> bool:
    """True when a `malformed` fault picked this request: the handler breaks one row of the page."""
    return bool(getattr(request.state, "malformed", False))


def _path(request: Request) -> str:
    """`request.url.path` without building the URL (host header parsing, urlunsplit, urlsplit)."""
    return str(request.scope["path"]).replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


def guarded(handler: Handler, platform_error: ErrorEnvelope) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a channel endpoint: apply an armed fault, then the configured page delay."""

    async def endpoint(request: Request) -> Response:
        state = state_of(request)
        state.requests_served += 1
        fault = state.take_fault(_path(request)) if state.faults else None
        if fault is not None:
            if fault.kind == "500":
                return PlainTextResponse("Internal Server Error (simulated)", status_code=500)
            if fault.kind == "429":
                return JSONResponse(
                    {"error": "too_many_requests", "retry_after": fault.retry_after},
                    status_code=429,
                    headers={"Retry-After": str(fault.retry_after)},
                )
            if fault.kind == "platform_error":
                return platform_error(request, fault.code)
            if fault.kind == "timeout":
                # Longer than any sane client timeout; the answer, if still awaited, is a normal one.
                await asyncio.sleep(fault.delay_s)
            if fault.kind == "malformed":
                request.state.malformed = True
        if state.config.page_delay_s > 0:
            await asyncio.sleep(state.config.page_delay_s)
        return await handler(request, state)

    return endpoint


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        return {}
    parsed = json.loads(body)
    if not isinstance(parsed, dict):
        raise ValueError("body must be a JSON object")
    return parsed


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def post_faults(request: Request) -> Response:
    """Arm a fault: {"path_prefix", "kind", "count", "retry_after"?, "delay_s"?, "code"?}."""
    state = state_of(request)
    try:
        body = await _json_body(request)
    except ValueError as exc:
        return _bad(f"invalid JSON body: {exc}")
    kind = str(body.get("kind", ""))
    if kind not in FAULT_KINDS:
        return _bad(f"kind must be one of {list(FAULT_KINDS)}, got {kind!r}")
    prefix = str(body.get("path_prefix", "/"))
    if not prefix.startswith("/"):
        return _bad("path_prefix must start with '/', e.g. \"/jd\"")
    try:
        fault = Fault(
            path_prefix=prefix,
            kind=kind,
            count=int(body.get("count", 1)),
            retry_after=int(body.get("retry_after", 1)),
            delay_s=float(body.get("delay_s", 30.0)),
            code=None if body.get("code") is None else str(body["code"]),
        )
    except (TypeError, ValueError) as exc:
        return _bad(f"count, retry_after and delay_s must be numbers: {exc}")
    state.faults.append(fault)
    return JSONResponse({"armed": _fault_json(fault), "faults": [_fault_json(f) for f in state.faults]})


def _fault_json(fault: Fault) -> dict[str, Any]:
    return {
        "path_prefix": fault.path_prefix,
        "kind": fault.kind,
        "remaining": fault.count,
        "retry_after": fault.retry_after,
        "delay_s": fault.delay_s,
        "code": fault.code,
    }


async def get_faults(request: Request) -> Response:
    """The faults still armed (remaining uses > 0)."""
    state = state_of(request)
    return JSONResponse({"faults": [_fault_json(f) for f in state.faults if f.count > 0]})


async def delete_faults(request: Request) -> Response:
    """Disarm every fault."""
    state = state_of(request)
    state.faults.clear()
    return JSONResponse({"faults": []})


def _clock(state: SimulatorState) -> dict[str, Any]:
    return {"now": iso(state.now), "start": iso(state.start)}


async def get_clock(request: Request) -> Response:
    """The simulator's virtual now: the newest time any feed can show."""
    return JSONResponse(_clock(state_of(request)))


async def post_advance(request: Request) -> Response:
    """Move the clock forward by {"minutes": N}: orders progress along their timelines, new orders,
    pushes, comments and events created in the interval appear."""
    state = state_of(request)
    try:
        minutes = float((await _json_body(request)).get("minutes", 0))
    except (TypeError, ValueError) as exc:
        return _bad(f"minutes must be a number: {exc}")
    if minutes < 0:
        return _bad("minutes must be >= 0: the clock only moves forward")
    limit = state.start + (state.config.days + HORIZON_DAYS - 1) * 86400
    if state.now + minutes * 60 > limit:
        return _bad(f"the simulated calendar ends {HORIZON_DAYS} days after the history; advance less")
    state.now += int(minutes * 60)
    return JSONResponse(_clock(state))


async def post_update_orders(request: Request) -> Response:
    """Push {"count": N} of the newest paid orders per channel one step forward (paid -> shipped ->
    finished -> refunded), stamped one second after the current now; the clock moves to that second.
    Optional "channels": a subset of ["tmall", "jd", "app"]."""
    state = state_of(request)
    try:
        body = await _json_body(request)
        count = int(body.get("count", 10))
    except (TypeError, ValueError) as exc:
        return _bad(f"count must be an integer: {exc}")
    channels = body.get("channels", ["tmall", "jd", "app"])
    if not isinstance(channels, list) or not set(channels) <= {"tmall", "jd", "app"}:
        return _bad('channels must be a list drawn from ["tmall", "jd", "app"] (POS sales are final)')
    state.now += 1
    updated: list[dict[str, Any]] = []
    for channel in channels:
        for row in state.feeds[channel].progress(count, state.now - 1, state.now):
            updated.append(
                {
                    "channel": channel,
                    "external_id": row.external_id,
                    "stage": STAGE_NAMES.get(row.stage, str(row.stage)),
                    "modified": iso(row.modified),
                }
            )
    return JSONResponse({**_clock(state), "updated": updated})


async def get_truth(request: Request) -> Response:
    """Ground truth as CSV: one row per source identity the feeds expose at the current clock, with
    true_person_id."""
    state = state_of(request)
    frame = truth_frame(state.config, state.now)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8")


async def get_stats(request: Request) -> Response:
    """Counters that show the data is generated lazily (rows materialised, timeline rows computed)."""
    state = state_of(request)
    return JSONResponse(
        {
            "requests_served": state.requests_served,
            "feeds": {
                ch: {
                    "base_count": state.feeds[ch].base_count,
                    "visible": state.feeds[ch].visible_count(state.now),
                    "rows_materialized": state.feeds[ch].rows_materialized,
                    "timeline_rows": state.feeds[ch].timeline_rows,
                }
                for ch in ORDER_CHANNELS
            },
        }
    )
