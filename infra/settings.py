"""One settings class for the whole product, read once from `C360_*` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob the product reads. The README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="C360_", env_file=".env", extra="ignore")

    env: Literal["development", "production", "test"] = Field(
        "development", description="Deployment environment; GraphiQL is on only in development."
    )
    database_url: str | None = Field(
        None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL (pgserver) under data_dir is started.",
    )
    data_dir: Path = Field(
        PROJECT_ROOT / ".c360",
        description="Project-local folder for the embedded database and Prefect home.",
    )
    host: str = Field("127.0.0.1", description="Address `c360 serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `c360 serve` listens on.")
    db_pool_size: int = Field(
        10,
        ge=1,
        le=200,
        description="Connections in the API's pool, per process; a request beyond them waits for one.",
    )
    db_connect_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for PostgreSQL before start-up fails."
    )
    jwt_secret: str = Field(
        "dev-only-change-me-dev-only-change-me",
        description="HMAC secret for bearer JWTs; must be set in production.",
    )
    erasure_key: str = Field(
        "dev-only-erasure-key-change-me-dev",
        description="HMAC key of the erased identifiers' suppression list; set once in production and keep it.",
    )
    jwt_issuer: str = Field("c360", description="`iss` every bearer JWT must carry.")
    jwt_audience: str = Field("c360-api", description="`aud` every bearer JWT must carry.")
    api_max_depth: int = Field(12, ge=3, le=50, description="Deepest GraphQL selection the API accepts.")
    api_max_tokens: int = Field(
        4000, ge=100, le=100_000, description="Most tokens a GraphQL document may have (a cost bound)."
    )
    api_rate_per_minute: int = Field(
        1200, ge=1, le=1_000_000, description="GraphQL requests a minute per token subject, per API process."
    )
    api_persisted_queries: Path | None = Field(
        None, description="JSON file of sha256 -> GraphQL document: the persisted queries (an allow-list)."
    )
    api_persisted_only: bool = Field(
        False,
        description="Run only the persisted queries' documents (for production app and mini-program traffic).",
    )
    api_access_log: bool = Field(
        False,
        description="Log every HTTP request (uvicorn's access log); off by default, as a proxy in front logs them.",
    )
    api_compiled: Literal["on", "off", "verify"] = Field(
        "on",
        description="The compiled read path (one SQL statement per known query): on, off, or verify (each "
        "compiled answer checked against the executor's; for tests).",
    )
    loyalty_config: Path = Field(
        PROJECT_ROOT / "config" / "loyalty.toml",
        description="The loyalty programme's rules (points, tiers, coupons, campaigns, referrals).",
    )
    service_config: Path = Field(
        PROJECT_ROOT / "config" / "service.toml",
        description="The service and care rules (case flows, SLAs, surveys, feedback rules, care actions).",
    )
    analytics_config: Path = Field(
        PROJECT_ROOT / "config" / "analytics.toml",
        description="Customer analytics rules (lifecycle, value tiers, RFM cells, tags, segments, households).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the API and the command line."
    )

    @field_validator("database_url")
    @classmethod
    def _normalize_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return to_async_url(value.strip())

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def graphiql(self) -> bool:
        return self.env == "development"


def to_async_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (as psql and libpq take them) and point them at asyncpg."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://", "postgresql+psycopg://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def mask_url(url: str) -> str:
    """The URL with its password replaced, for error messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as given, minus nothing secret to hide
        return url.split("@")[-1]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
