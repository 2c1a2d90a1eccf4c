"""Interaction streams: WeChat pushes, Weibo comments and mentions, own-app browsing events.

Like orders, item i of a stream has a creation time that grows with i (so the clock reveals new items
when advanced) and the first items introduce every identity of the channel once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sync.simulator.people import SourceIdentity
from sync.simulator.seeding import row_random, stream_key
from sync.simulator.trading_hours import ONLINE_HOURS, Rhythm


class Stream:
    """Item times for one stream: `per_span` items over `days` days from `start`."""

    def __init__(self, seed: int, label: str, start: datetime, days: int, per_span: int) -> None:
        self.key = stream_key(seed, label)
        self.rhythm = Rhythm(self.key, start, days, per_span, ONLINE_HOURS)

    def time(self, i: int) -> int:
        """Time of item i."""
        return self.rhythm.time(i)

    def visible_count(self, now: int) -> int:
        """Items at or before `now` are [0, visible_count)."""
        return self.rhythm.first_at_or_after(now + 1)

    def subject(self, i: int, members: tuple[SourceIdentity, ...]) -> SourceIdentity:
        """Who item i is about: first every member once, then repeat visitors favoured."""
        if i < len(members):
            return members[i]
        return members[int(row_random(self.key, i).random() ** 2 * len(members))]


@dataclass(frozen=True)
class WechatPush:
    """One push the official account receives: a follow, unfollow, QR scan or text message."""

    seq: int
    at: int
    openid: str
    kind: str  # subscribe | unsubscribe | SCAN | text
    event_key: str
    content: str
    msg_id: int


@dataclass
class Follower:
    openid: str
    subscribed: bool
    subscribe_time: int
    scene: str
    first_seq: int
