"""Settings of one simulated retailer: seed, volumes, the virtual clock and the demo credentials."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

# China has had one UTC offset and no daylight saving since 1991, so a fixed offset is exact.
CST = timezone(timedelta(hours=8), "Asia/Shanghai")

ORDER_CHANNELS: tuple[str, ...] = ("tmall", "jd", "app", "pos")


def _default_shares() -> dict[str, float]:
    return {"tmall": 0.35, "jd": 0.20, "app": 0.20, "pos": 0.25}


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulated channels serve is a pure function of these values.

    `orders` is the total over the order channels, split by `order_shares` (a benchmark that wants
    1,000,000 Tmall trades passes `orders=1_000_000, order_shares={"tmall": 1.0}`). The data spans
    `days` days from `start`; the clock's first "now" is `start + days`. Orders keep arriving at the
    same rate after that when the clock is advanced (POST /_sim/advance).
    """

    seed: int = 42
    people: int = 2000
    orders: int = 8000
    order_shares: dict[str, float] = field(default_factory=_default_shares)
    start: datetime = datetime(2026, 9, 1, tzinfo=CST)
    days: int = 80
    # Interaction volumes; None derives them from the number of people in the channel.
    app_events: int | None = None
    wechat_pushes: int | None = None
    weibo_items: int | None = None
    # WeChat returns up to 10000 openids per user/get call; smaller values let tests page.
    wechat_page_size: int = 10000
    # Share of rows served with one broken field (deterministic per row), for quarantine tests.
    malformed_rate: float = 0.0
    # Sleep before answering each data page: lets a test watch a long pull in progress.
    page_delay_s: float = 0.0
    # Real platforms refuse a timestamp more than 10 (TOP) / 6 (JOS) minutes from their wall clock.
    # Off by default because the simulator's data clock is virtual.
    check_timestamp: bool = False
    # Bytes of rendered TOP/JOS orders kept for reuse (an order's JSON is reused until it changes;
    # pages re-read by a second pull cost a join). About 1.2 KB per order; 0 turns the cache off.
    render_cache_bytes: int = 256 * 2**20
    taobao_app_key: str = "12345678"
    taobao_app_secret: str = "demo-taobao-secret-0123456789abcdef"
    taobao_session: str = "6100a1b2c3d4e5f6demo-session"
    jd_app_key: str = "DEMOJDAPPKEY0001"
    jd_app_secret: str = "demo-jd-secret-0123456789abcdef"
    jd_access_token: str = "demo-jd-access-token"
    wechat_appid: str = "wx1234567890abcdef"
    wechat_secret: str = "demo-wechat-secret-0123456789ab"
    weibo_access_token: str = "2.00demoWeiboAccessToken"
    app_api_token: str = "demo-app-api-token"
    pos_api_token: str = "demo-pos-api-token"

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("SimulatorConfig.start must be timezone-aware, e.g. tzinfo=CST")
        if self.days < 1:
            raise ValueError(f"SimulatorConfig.days must be >= 1 (the history's length), got {self.days}")
        if self.people < 0 or self.orders < 0:
            raise ValueError("SimulatorConfig.people and .orders must be >= 0")
        if not 0.0 <= self.malformed_rate <= 1.0:
            raise ValueError(
                f"SimulatorConfig.malformed_rate must be within [0, 1], got {self.malformed_rate}"
            )
        if self.render_cache_bytes < 0:
            raise ValueError(
                f"SimulatorConfig.render_cache_bytes must be >= 0 (0 disables it), got {self.render_cache_bytes}"
            )
        unknown = set(self.order_shares) - set(ORDER_CHANNELS)
        if unknown:
            raise ValueError(f"order_shares has unknown channels {sorted(unknown)}; use {ORDER_CHANNELS}")

    @property
    def now(self) -> datetime:
        """The clock's starting point: the end of the generated history."""
        return self.start + timedelta(days=self.days)

    def orders_for(self, channel: str) -> int:
        """How many orders `channel` has up to the initial now."""
        return round(self.orders * self.order_shares.get(channel, 0.0))
