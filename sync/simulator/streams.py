"""Interaction streams: WeChat pushes, Weibo comments and mentions, own-app browsing events.

Like orders, item i of a stream has a creation time that grows with i (so the clock reveals new items
when advanced) and the first items introduce every identity of the channel once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.simulator.people import SourceIdentity
from sync.simulator.seeding import row_random, stream_key, uniform_one

DAY = 86400


class Stream:
    """Item times for one stream: `per_span` items over `days` days from `start`."""

    def __init__(self, seed: int, label: str, start: int, days: int, per_span: int) -> None:
        self.key = stream_key(seed, label)
        self.start = start
        self.interval = days * DAY / max(1, per_span)

    def time(self, i: int) -> int:
        return self.start + int((i + uniform_one(self.key, i, 0)) * self.interval)

    def visible_count(self, now: int) -> int:
        """Items at or before `now` are [0, visible_count)."""
        i = max(0, int((now + 1 - self.start) / self.interval) - 2)
        while self.time(i) <= now:
            i += 1
        while i > 0 and self.time(i - 1) > now:
            i -= 1
        return i

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
