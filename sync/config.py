"""Sync settings: channel base URLs, credentials, schedules and batch sizes, read once from `C360_SYNC_*`.

Nested values use a double underscore, e.g. `C360_SYNC_TMALL__BASE_URL=https://eco.taobao.com` or
`C360_SYNC_TMALL__CRON="*/10 * * * *"`. The defaults point every channel at the simulator on loopback
with its demo credentials, so `c360 demo` and the tests need no configuration.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.settings import PROJECT_ROOT
from sync.constraints import TimeBounds

CHANNEL_CODES: tuple[str, ...] = ("tmall", "jd", "app", "wechat", "weibo", "pos")


class ChannelConfig(BaseModel):
    """One channel's endpoint, credentials and schedule."""

    enabled: bool = Field(True, description="Pull this channel in `sync_all` and `c360 sync serve`.")
    base_url: str = Field(
        "http://127.0.0.1:8765", description="Base URL of the channel API (the simulator's by default)."
    )
    app_key: str = Field("demo-app-key", description="TOP app_key / JD app_key / WeChat appid.")
    app_secret: str = Field("demo-app-secret", description="Signing secret / WeChat appsecret.")
    token: str = Field(
        "demo-token",
        description="Seller session (TOP), access_token (JD, Weibo) or Bearer token (own app, POS).",
    )
    cron: str = Field("*/15 * * * *", description="Cron schedule `c360 sync serve` registers.")
    page_size: int = Field(100, ge=1, le=10_000, description="Rows per page requested from the API.")


# Each channel's own defaults. An environment variable for one field of a channel (say
# C360_SYNC_APP__BASE_URL) is merged into these, field by field: pydantic-settings would otherwise build the
# channel from that one variable and ChannelConfig's generic defaults, losing the channel's cron, page size
# and credentials.
CHANNEL_DEFAULTS: dict[str, dict[str, object]] = {
    "tmall": {
        "cron": "*/10 * * * *",
        "app_key": "12345678",
        "app_secret": "demo-taobao-secret-0123456789abcdef",
        "token": "6100a1b2c3d4e5f6demo-session",
    },
    "jd": {
        "cron": "*/10 * * * *",
        "app_key": "DEMOJDAPPKEY0001",
        "app_secret": "demo-jd-secret-0123456789abcdef",
        "token": "demo-jd-access-token",
    },
    "app": {"page_size": 500, "cron": "*/5 * * * *", "token": "demo-app-api-token"},
    "wechat": {
        "cron": "*/5 * * * *",
        "app_key": "wx1234567890abcdef",
        "app_secret": "demo-wechat-secret-0123456789ab",
    },
    "weibo": {"cron": "*/30 * * * *", "token": "2.00demoWeiboAccessToken"},
    "pos": {"page_size": 500, "cron": "0 * * * *", "token": "demo-pos-api-token"},
}


def _channel(code: str) -> ChannelConfig:
    return ChannelConfig.model_validate(CHANNEL_DEFAULTS[code])


class SyncSettings(BaseSettings):
    """Every knob of the sync layer. The README's configuration table lists these."""

    model_config = SettingsConfigDict(
        env_prefix="C360_SYNC_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    tmall: ChannelConfig = Field(
        default_factory=lambda: _channel("tmall"),
        description="Tmall/Taobao TOP: trades (incremental) and refunds.",
    )
    jd: ChannelConfig = Field(
        default_factory=lambda: _channel("jd"),
        description="JD JOS: orders by modified time.",
    )
    app: ChannelConfig = Field(
        default_factory=lambda: _channel("app"),
        description="Own app / site / mini-program: members, orders, browsing events.",
    )
    wechat: ChannelConfig = Field(
        default_factory=lambda: _channel("wechat"),
        description="WeChat official account: followers, follow/unfollow events, messages.",
    )
    weibo: ChannelConfig = Field(
        default_factory=lambda: _channel("weibo"),
        description="Weibo: comments and mentions.",
    )
    pos: ChannelConfig = Field(
        default_factory=lambda: _channel("pos"),
        description="Store POS: transactions over HTTP and the file drop folder.",
    )
    catalog_url: str = Field(
        "http://127.0.0.1:8765", description="Base URL of the product catalogue (`/catalog/v1/products`)."
    )
    catalog_cron: str | None = Field(
        "20 * * * *",
        description="Cron `c360 sync serve` pulls the product catalogue on (empty: not scheduled).",
    )
    crons: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Crons of other scheduled flows, by flow name, as JSON: C360_SYNC_CRONS=\'{"loyalty-daily": '
            '"0 4 * * *"}\'. Channels keep C360_SYNC_<CHANNEL>__CRON.'
        ),
    )
    heartbeat_grace_seconds: int = Field(
        120,
        ge=45,
        le=24 * 3600,
        description=(
            "Under `serve`, a flow run whose heartbeats (every 30 s) stop for this long is marked Crashed, "
            "so a run left Running by a dead machine frees its channel's one-run slot."
        ),
    )
    pos_drop_dir: Path = Field(
        PROJECT_ROOT / ".c360" / "pos_drop",
        description="Folder watched for POS exports (*.csv, *.jsonl); landed files move to `done/`.",
    )
    pos_file_ready: Literal["stable", "marker"] = Field(
        "stable",
        description=(
            "When a drop-folder file is complete: `stable` (its size and time unchanged over "
            "`pos_file_stable_seconds`) or `marker` (a `<name>.done` file beside it)."
        ),
    )
    pos_file_stable_seconds: float = Field(
        1.0, ge=0, le=3600, description="How long a drop-folder file must stay unchanged before it is read."
    )
    initial_lookback_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="How far back the first run of a channel starts when --since is not given.",
    )
    marketplace_window_minutes: int = Field(
        1440,
        ge=1,
        le=1440,
        description="Time window per TOP/JD incremental request (TOP allows at most a day).",
    )
    pos_lateness_hours: int = Field(
        72,
        ge=0,
        le=24 * 30,
        description="POS registers deliver late: each pull re-reads this far behind the watermark.",
    )
    earliest_date: date = Field(
        date(2000, 1, 1),
        description="Records dated before this (an order placed in 1900) are quarantined, not landed.",
    )
    future_tolerance_days: int = Field(
        7,
        ge=0,
        le=3650,
        description="Records dated more than this many days after now (an order in 2099) are quarantined.",
    )
    safety_lag_seconds: int = Field(
        60,
        ge=0,
        description="Windows end this far before now, so rows still being written are read next run.",
    )
    source_clock_url: str | None = Field(
        None,
        description=(
            'URL answering {"now": ISO time} with the sources\' clock; incremental windows end there. '
            "Only for the simulator (`<base>/_sim/clock`), whose clock is virtual; unset in production."
        ),
    )
    # Larger batches amortize each statement's fixed cost (Tmall, 100k orders: 2000 -> 10000 is +22% orders/s
    # for ~+95 MiB of RSS); what a crash can lose is one batch, which the rerun reads again.
    batch_size: int = Field(
        10_000, ge=1, le=100_000, description="Records per landing batch (one transaction per writer)."
    )
    concurrency: int = Field(4, ge=1, le=64, description="HTTP requests in flight per connector.")
    writers: int = Field(
        2,
        ge=1,
        le=16,
        description=(
            "Database connections landing one stream's batches together (split by buyer, so they never "
            "touch the same rows); PostgreSQL's per-row work then runs on that many cores."
        ),
    )
    max_retries: int = Field(
        5, ge=0, le=20, description="Retries of a transient HTTP failure (timeout, 5xx, 429)."
    )
    backoff_base_seconds: float = Field(0.5, ge=0, description="First retry delay; doubles each retry.")
    backoff_max_seconds: float = Field(30.0, ge=0, description="Longest delay between retries.")
    request_timeout_seconds: float = Field(30.0, gt=0, description="Timeout of one HTTP request.")
    prefect_database_url: str | None = Field(
        None,
        description=(
            "Database for Prefect's own state when no PREFECT_API_URL is set. Unset: a `c360_prefect` "
            "database on the product's PostgreSQL server."
        ),
    )

    @field_validator(*CHANNEL_CODES, mode="before")
    @classmethod
    def _merge_channel_defaults(cls, value: object, info: ValidationInfo) -> object:
        """Fields given for a channel (by environment variable or dict) override only themselves."""
        if isinstance(value, dict) and info.field_name is not None:
            return {**CHANNEL_DEFAULTS[info.field_name], **value}
        return value

    def channel(self, code: str) -> ChannelConfig:
        """The config of channel `code` (one of CHANNEL_CODES)."""
        if code not in CHANNEL_CODES:
            raise ValueError(f"unknown channel {code!r}; expected one of {', '.join(CHANNEL_CODES)}")
        config: ChannelConfig = getattr(self, code)
        return config

    def time_bounds(self) -> TimeBounds:
        """The times a landed record may carry (checked by `sync.constraints`)."""
        earliest = datetime.combine(self.earliest_date, time(0), tzinfo=UTC)
        return TimeBounds(earliest=earliest, future=timedelta(days=self.future_tolerance_days))

    def pointed_at(self, base_url: str) -> SyncSettings:
        """A copy with every channel (and the catalogue) pointed at one base URL, e.g. the simulator's."""
        data = self.model_dump()
        for code in CHANNEL_CODES:
            data[code]["base_url"] = base_url
        data["catalog_url"] = base_url
        return SyncSettings.model_validate(data)

    def pointed_at_simulator(self, base_url: str) -> SyncSettings:
        """Every channel at the simulator, windows ending at its virtual clock."""
        data = self.pointed_at(base_url).model_dump()
        data["source_clock_url"] = base_url.rstrip("/") + "/_sim/clock"
        return SyncSettings.model_validate(data)


@lru_cache(maxsize=1)
def get_sync_settings() -> SyncSettings:
    return SyncSettings()
