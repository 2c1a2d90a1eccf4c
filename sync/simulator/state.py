"""The simulator's mutable state: the clock, injected faults, issued WeChat tokens, update overlays.

Everything else is derived from the config on demand.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from sync.simulator.config import ORDER_CHANNELS, SimulatorConfig
from sync.simulator.orders import OrderFeed
from sync.simulator.people import Population, population
from sync.simulator.render_cache import RenderCache
from sync.simulator.seeding import row_random
from sync.simulator.streams import Follower, Stream, WechatPush
from sync.simulator.vocabulary import WECHAT_TEXTS

FAULT_KINDS = ("500", "429", "timeout", "malformed", "platform_error")


@dataclass
class Fault:
    """The next `count` requests under `path_prefix` fail as `kind`."""

    path_prefix: str
    kind: str
    count: int
    retry_after: int = 1
    delay_s: float = 30.0
    code: str | None = None  # platform_error: the platform's error code to send instead of the default


@dataclass
class WechatTokens:
    """Issued access tokens (wall clock): each lives 7200 s; a new one leaves the previous valid
    for 5 more minutes, like WeChat."""

    current: str | None = None
    current_until: float = 0.0
    previous: str | None = None
    previous_until: float = 0.0


@dataclass
class SimulatorState:
    config: SimulatorConfig
    population: Population
    feeds: dict[str, OrderFeed]
    now: int
    faults: list[Fault] = field(default_factory=list)
    wechat_tokens: WechatTokens = field(default_factory=WechatTokens)
    pushes: list[WechatPush] = field(default_factory=list)
    followers: dict[str, Follower] = field(default_factory=dict)
    requests_served: int = 0
    # Derived values that depend only on the config (e.g. member registration times).
    cache: dict[str, Any] = field(default_factory=dict)
    # Rendered TOP/JOS orders keyed by (channel, index, modified, overlay entry, fields).
    render_cache: RenderCache = field(default_factory=lambda: RenderCache(0))

    @classmethod
    def create(cls, config: SimulatorConfig) -> SimulatorState:
        """Fresh state for `config`: clock at the initial now, no faults, no overlay."""
        pop = population(config.seed, config.people)
        feeds = {ch: OrderFeed(config, ch, pop) for ch in ORDER_CHANNELS}
        return cls(
            config=config,
            population=pop,
            feeds=feeds,
            now=int(config.now.timestamp()),
            render_cache=RenderCache(config.render_cache_bytes),
        )

    @property
    def start(self) -> int:
        """The start of the history in epoch seconds."""
        return int(self.config.start.timestamp())

    # ----------------------------------------------------------------- faults

    def take_fault(self, path: str) -> Fault | None:
        """The first armed fault matching `path`, with one use consumed."""
        for fault in self.faults:
            if fault.count > 0 and path.startswith(fault.path_prefix):
                fault.count -= 1
                return fault
        return None

    # ----------------------------------------------------------------- streams

    def stream(self, name: str) -> Stream:
        """The item-time stream behind WeChat pushes, Weibo items or app events."""
        cached = self.cache.get(f"stream:{name}")
        if isinstance(cached, Stream):
            return cached
        c = self.config
        members = {
            "wechat": len(self.population.by_channel["wechat"]),
            "weibo": len(self.population.by_channel["weibo"]),
            "app-events": len(self.population.by_channel["app"]),
        }[name]
        explicit = {"wechat": c.wechat_pushes, "weibo": c.weibo_items, "app-events": c.app_events}[name]
        per_span = explicit if explicit is not None else members * (5 if name == "app-events" else 3)
        stream = Stream(c.seed, f"stream:{name}", c.start, c.days, per_span)
        self.cache[f"stream:{name}"] = stream
        return stream

    def wechat_history(self) -> tuple[list[WechatPush], dict[str, Follower]]:
        """All pushes up to now and each follower's state, extended incrementally as the clock moves.
        Pushes depend on earlier ones (an unfollowed user can only re-follow), so they are replayed
        in order once and kept; there are a few per follower."""
        stream = self.stream("wechat")
        members = self.population.first_seen_order("wechat")
        visible = stream.visible_count(self.now) if members else 0
        for i in range(len(self.pushes), visible):
            who = stream.subject(i, members)
            at = stream.time(i)
            rng = row_random(stream.key, i + (1 << 40))
            follower = self.followers.get(who.external_id)
            roll = rng.random()
            event_key, content, msg_id = "", "", 0
            if follower is None or not follower.subscribed:
                kind = "subscribe"
                scene_roll = rng.random()
                if scene_roll < 0.35:
                    event_key = f"qrscene_store_S{101 + rng.randint(0, 11):03d}"
                    scene = "ADD_SCENE_QR_CODE"
                else:
                    scene = "ADD_SCENE_SEARCH" if scene_roll < 0.7 else "ADD_SCENE_PROFILE_CARD"
                if follower is None:
                    self.followers[who.external_id] = Follower(who.external_id, True, at, scene, i + 1)
                else:
                    follower.subscribed, follower.subscribe_time, follower.scene = True, at, scene
            elif roll < 0.12:
                kind = "unsubscribe"
                follower.subscribed = False
            elif roll < 0.35:
                kind, event_key = "SCAN", f"store_S{101 + rng.randint(0, 11):03d}"
            else:
                kind, content = "text", rng.choice(WECHAT_TEXTS)
                msg_id = 24_000_000_000_000_000 + i * 1000 + rng.randint(0, 999)
            self.pushes.append(WechatPush(i + 1, at, who.external_id, kind, event_key, content, msg_id))
        return self.pushes[:visible], self.followers

    def issue_wechat_token(self, wall_clock: float) -> str:
        """Issue a new access token; the previous one stays valid for 5 minutes."""
        tokens = self.wechat_tokens
        tokens.previous = tokens.current
        tokens.previous_until = min(tokens.current_until, wall_clock + 300)
        tokens.current = secrets.token_urlsafe(48)
        tokens.current_until = wall_clock + 7200
        return tokens.current

    def wechat_token_state(self, token: str, wall_clock: float) -> str:
        """ "valid", "expired" (42001) or "invalid" (40001)."""
        tokens = self.wechat_tokens
        for known, until in (
            (tokens.current, tokens.current_until),
            (tokens.previous, tokens.previous_until),
        ):
            if token and token == known:
                return "valid" if wall_clock < until else "expired"
        return "invalid"
