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

_ORDER_CHANNELS = ("tmall", "jd", "pos")  # the app's members are listed whether they ordered or not
_STREAM_FOR = {"wechat": ("wechat", "wechat_pushes", 3), "weibo": ("weibo", "weibo_items", 3)}


def exposed(config: SimulatorConfig, channel: str, now: int | None = None) -> list[SourceIdentity]:
    """The channel's identities the feeds show at `now` (default: the initial now). Marketplace
    buyers appear with their first order, POS members once their first sale is delivered (offline
    registers deliver late), social users with their first item, app members all along."""
    pop = population(config.seed, config.people)
    ordered = pop.first_seen_order(channel)
    at = int(config.now.timestamp()) if now is None else now
    if not ordered:
        return []
    if channel in _ORDER_CHANNELS:
        feed = OrderFeed(config, channel, pop)
        first = min(len(ordered), feed.visible_count(at))
        if channel != "pos":
            return list(ordered[:first])
        delivered = feed.timeline(np.arange(first)).delivered.tolist()
        return [identity for identity, when in zip(ordered, delivered, strict=False) if when <= at]
    if channel in _STREAM_FOR:
        label, attribute, per_member = _STREAM_FOR[channel]
        explicit = getattr(config, attribute)
        per_span = explicit if explicit is not None else len(ordered) * per_member
        stream = Stream(config.seed, f"stream:{label}", config.start, config.days, per_span)
        return list(ordered[: stream.visible_count(at)])
    return list(ordered)


def truth_frame(config: SimulatorConfig, now: int | None = None) -> pd.DataFrame:
    """The ground truth for a simulator running `config` with its clock at `now` (default: the
    initial now), as GET /_sim/truth serves it."""
    pop = population(config.seed, config.people)
    rows: list[dict[str, str | None]] = []
    for channel in CHANNELS:
        for identity in sorted(exposed(config, channel, now), key=lambda s: s.person):
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
    "<channel>:<external id>" with the ids the connectors land (Tmall buyer_open_uid, JD open_id_buyer, app
    member_no, WeChat openid, Weibo uid, POS member phone or card no.). Order volumes are the config
    defaults unless `config` is given; marketplace and POS identities count only once an order shows
    them."""
    return truth_frame(config or SimulatorConfig(seed=seed, people=people))
