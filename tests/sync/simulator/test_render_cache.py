"""The render cache serves the very bytes an uncached render gives, as the clock moves and orders
are pushed forward, and stays within its byte budget."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from sync.simulator import SimulatorConfig, create_simulator_app, jos_sign, top_sign
from sync.simulator.render_cache import ENTRY_OVERHEAD, RenderCache
from sync.simulator.state import SimulatorState
from tests.support import live_server

TRADE_FIELDS = (
    "tid,status,buyer_open_uid,buyer_nick,receiver_name,receiver_mobile,receiver_state,receiver_city,"
    "receiver_district,receiver_address,receiver_zip,oaid,payment,post_fee,total_fee,discount_fee,created,"
    "modified,pay_time,end_time,orders"
)
JD_STATES = "WAIT_SELLER_STOCK_OUT,WAIT_GOODS_RECEIVE_CONFIRM,FINISHED_L,TRADE_CANCELED,LOCKED"
# The only bytes of a TOP page that differ between two calls: a fresh random request id.
REQUEST_ID = re.compile(rb'"request_id":"[0-9a-f]{13}"')


@dataclass
class Served:
    """One running simulator, its state (to read the cache) and a client."""

    config: SimulatorConfig
    state: SimulatorState
    http: httpx.Client

    def top(self, method: str, **params: Any) -> bytes:
        form = {
            "method": method,
            "app_key": self.config.taobao_app_key,
            "session": self.config.taobao_session,
            "timestamp": "2026-11-20 10:00:00",
            "format": "json",
            "v": "2.0",
            "sign_method": "md5",
            **{k: str(v) for k, v in params.items()},
        }
        form["sign"] = top_sign(form, self.config.taobao_app_secret, "md5")
        response = self.http.post("/taobao/router/rest", data=form)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        return REQUEST_ID.sub(b'"request_id":"-"', response.content)

    def jd(self, **business: Any) -> bytes:
        form = {
            "method": "jingdong.pop.order.search",
            "app_key": self.config.jd_app_key,
            "access_token": self.config.jd_access_token,
            "timestamp": "2026-11-20 10:00:00",
            "v": "2.0",
            "360buy_param_json": json.dumps(business, ensure_ascii=False),
        }
        form["sign"] = jos_sign(form, self.config.jd_app_secret)
        response = self.http.post("/jd/routerjson", data=form)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        return response.content

    def now(self) -> datetime:
        return datetime.fromisoformat(self.http.get("/_sim/clock").json()["now"])


@pytest.fixture
def pair() -> Iterator[Any]:
    """Factory: the same config served twice, once with the render cache off and once with `budget`."""
    with ExitStack() as stack:

        def start(config: SimulatorConfig, budget: int) -> tuple[Served, Served]:
            served = []
            for bytes_ in (0, budget):
                cfg = replace(config, render_cache_bytes=bytes_)
                app = create_simulator_app(cfg)
                base = stack.enter_context(live_server(app))
                http = stack.enter_context(httpx.Client(base_url=base, timeout=60))
                served.append(Served(cfg, app.state.simulator, http))
            return served[0], served[1]

        yield start


def _gmt8(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S}"


def _round(sim: Served) -> list[bytes]:
    """What a pull does, plus the variations a cache could get wrong: several windows, page sizes
    that cut the same trades differently, `fields` lists, status filters, JD's orderings."""
    now = sim.now()
    pages = []
    for days in (0, 1, 4):
        hi = now - timedelta(days=days)
        lo = hi - timedelta(days=1)
        window = {"start_modified": _gmt8(lo), "end_modified": _gmt8(hi)}
        for fields in (TRADE_FIELDS, None, "tid,modified,status"):
            for page_size, page_no in ((100, 1), (1, 1), (40, 2), (37, 1)):
                extra = {"fields": fields} if fields else {}
                pages.append(
                    sim.top(
                        "taobao.trades.sold.increment.get",
                        **window,
                        page_size=page_size,
                        page_no=page_no,
                        **extra,
                    )
                )
        pages.append(
            sim.top(
                "taobao.trades.sold.increment.get",
                **window,
                fields=TRADE_FIELDS,
                page_size=20,
                page_no=1,
                status="TRADE_FINISHED",
                use_has_next="true",
            )
        )
        for extra in ({}, {"dateType": "1"}, {"sortType": "0"}):
            for page, size in (("1", "100"), ("2", "30")):
                pages.append(
                    sim.jd(
                        start_date=_gmt8(lo),
                        end_date=_gmt8(hi),
                        order_state=JD_STATES,
                        page=page,
                        page_size=size,
                        **extra,
                    )
                )
    pages.append(sim.top("taobao.trades.sold.get", page_size=100, page_no=2, fields=TRADE_FIELDS))
    return pages


def _statuses(pages: list[bytes]) -> dict[int, str]:
    found = {}
    for page in pages:
        body = json.loads(page)
        reply = body.get("trades_sold_increment_get_response") or {}
        for trade in (reply.get("trades") or {}).get("trade") or []:
            if "tid" in trade and "status" in trade:
                found[trade["tid"]] = trade["status"]
    return found


def test_cached_pages_are_the_bytes_of_an_uncached_render(pair):
    config = SimulatorConfig(seed=11, people=400, orders=4000, malformed_rate=0.03)
    plain, cached = pair(config, 64 * 2**20)
    first = _round(plain)
    assert _round(cached) == first
    assert _round(cached) == first  # now from the cache
    assert cached.state.render_cache.hits > 0 and plain.state.render_cache.hits == 0

    # The clock moves: trades the cache holds are paid, shipped, finished or refunded since.
    hits = cached.state.render_cache.hits
    for sim in (plain, cached):
        sim.http.post("/_sim/advance", json={"minutes": 3 * 24 * 60})
    after = _round(plain)
    assert _round(cached) == after
    assert cached.state.render_cache.hits > hits  # unchanged trades were reused...
    before, later = _statuses(first), _statuses(after)
    moved = [tid for tid in before if tid in later and before[tid] != later[tid]]
    assert moved  # ...and trades whose status changed were rendered anew

    # Orders pushed forward by update_orders, then a malformed fault on one page of each gateway.
    for sim in (plain, cached):
        assert sim.http.post("/_sim/update_orders", json={"count": 15}).status_code == 200
    assert _round(cached) == _round(plain)
    for sim in (plain, cached):
        for prefix in ("/taobao", "/jd"):
            sim.http.post("/_sim/faults", json={"path_prefix": prefix, "kind": "malformed", "count": 1})
    broken = _round(plain)
    assert _round(cached) == broken
    # The broken first trade was not kept: the same request answers clean bytes again.
    assert _round(cached) == _round(plain) != broken


def test_the_cache_stays_within_its_byte_budget(pair):
    config = SimulatorConfig(seed=3, people=300, orders=3000, order_shares={"tmall": 0.5, "jd": 0.5})
    budget = 120_000  # about a hundred orders
    plain, cached = pair(config, budget)
    assert _round(cached) == _round(plain)
    cache = cached.state.render_cache
    assert 0 < cache.bytes <= budget
    assert cache.evictions > 0
    assert _round(cached) == _round(plain)
    assert cache.bytes <= budget


def test_render_cache_evicts_least_recently_used_first():
    cache = RenderCache(3 * (ENTRY_OVERHEAD + 10))
    for key in "abc":
        assert cache.admits(10)
        cache.put(key, key.encode() * 10)
    assert cache.get_many(["a"]) == [b"a" * 10]  # a is now the most recently used
    cache.put("d", b"d" * 10)
    assert cache.get_many(["a", "b", "c", "d"]) == [b"a" * 10, None, b"c" * 10, b"d" * 10]
    assert cache.bytes == 3 * (ENTRY_OVERHEAD + 10)
    assert not cache.admits(4 * (ENTRY_OVERHEAD + 10))  # larger than the whole budget
    cache.put("huge", b"x" * 4 * (ENTRY_OVERHEAD + 10))  # ...and not kept if put anyway
    assert cache.get_many(["huge"]) == [None] and len(cache) == 3
    cache.put("c", b"C" * 5)  # replacing an entry charges the new size only
    assert cache.bytes == 3 * ENTRY_OVERHEAD + 25


def test_a_zero_budget_keeps_nothing_and_a_negative_one_is_refused():
    cache = RenderCache(0)
    assert not cache.enabled and not cache.admits(1)
    cache.put("a", b"x")
    assert len(cache) == 0 and cache.bytes == 0
    with pytest.raises(ValueError, match="render_cache_bytes"):
        SimulatorConfig(render_cache_bytes=-1)


def test_a_scan_larger_than_the_budget_keeps_what_fit_first():
    """Plain LRU would hold only the tail of a long scan, and a second identical scan would then
    miss everything; once full, only every 32nd newcomer is let in."""
    cache = RenderCache(4 * (ENTRY_OVERHEAD + 1))
    keys = [f"k{n}" for n in range(4 + 64)]
    for key in keys:
        if cache.admits(1):
            cache.put(key, b"x")
    kept = [key for key, value in zip(keys, cache.get_many(keys), strict=True) if value is not None]
    # The 32nd and 64th newcomers past the budget got in, each evicting the least recently used.
    assert kept == ["k2", "k3", keys[4 + 31], keys[4 + 63]]
    assert cache.evictions == 2
