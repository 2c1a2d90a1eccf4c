"""Ground truth of who is who, for the identity-resolution tests.

One row per source identity a channel exposes, with the identity-contract columns exactly as the
channel serves them (masked marketplace mobiles and all) plus `true_person_id`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sync.simulator.config import SimulatorConfig
from sync.simulator.orders import OrderFeed
from sync.simulator.people import CHANNELS, IDENTITY_COLUMNS, SourceIdentity, population
from sync.simulator.streams import Stream

_ORDER_CHANNELS = ("tmall", "jd", "pos")
_STREAM_FOR = {"wechat": ("wechat", "wechat_pushes", 3), "weibo": ("weibo", "weibo_items", 3)}


def exposed(config: SimulatorConfig, channel: str) -> list[SourceIdentity]:
    """The channel's identities the feeds show at the initial now. Marketplace buyers appear with
    their first order, POS members once their first sale is delivered (late registers included),
    social users with their first item, app members all along."""
    ordered = population(config.seed, config.people).first_seen_order(channel)
    if channel == "pos" and ordered:
        feed = OrderFeed(config, "pos", population(config.seed, config.people))
        first = min(len(ordered), config.orders_for("pos"))
        delivered = feed.timeline(np.arange(first)).delivered
        now = int(config.now.timestamp())
        return [identity for identity, at in zip(ordered, delivered.tolist(), strict=False) if at <= now]
    return list(ordered[: exposed_count(config, channel, len(ordered))])


def exposed_count(config: SimulatorConfig, channel: str, members: int) -> int:
    """How many of a channel's identities (in first-seen order) the feeds show at the initial now,
    for channels whose identities all appear in order (every channel but POS)."""
    if channel in _ORDER_CHANNELS:
        return min(members, config.orders_for(channel))
    if channel in _STREAM_FOR:
        label, attribute, per_member = _STREAM_FOR[channel]
        explicit = getattr(config, attribute)
        per_span = explicit if explicit is not None else members * per_member
        stream = Stream(config.seed, f"stream:{label}", config.start, config.days, per_span)
        return min(members, stream.visible_count(int(config.now.timestamp())))
    return members


def truth_frame(config: SimulatorConfig) -> pd.DataFrame:
    """The ground truth for a simulator running `config` (as GET /_sim/truth serves it)."""
    pop = population(config.seed, config.people)
    rows: list[dict[str, str | None]] = []
    for channel in CHANNELS:
        for identity in sorted(exposed(config, channel), key=lambda s: s.person):
            row: dict[str, str | None] = {column: None for column in IDENTITY_COLUMNS}
            row.update(identity.fields)
            row["record_id"] = identity.record_id
            row["source"] = channel
            row["true_person_id"] = pop.people[identity.person].person_id
            rows.append(row)
    return pd.DataFrame(rows, columns=list(IDENTITY_COLUMNS), dtype="string")


def identity_frame(
    seed: int = 42, people: int = 2000, *, config: SimulatorConfig | None = None
) -> pd.DataFrame:
    """Ground truth for the population (seed, people): one row per source identity across channels,
    columns `record_id, source, name, phone, email, birth_date, gender, id_number, member_no,
    wechat_unionid, address, district, city, province, true_person_id`. `record_id` is
    "<channel>:<external id>" with the ids the connectors land (Tmall buyer_open_uid, JD pin, app
    member_no, WeChat openid, Weibo uid, POS member phone or card no.). Order volumes are the config
    defaults unless `config` is given; marketplace and POS identities count only once an order shows
    them."""
    return truth_frame(config or SimulatorConfig(seed=seed, people=people))
