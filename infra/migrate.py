"""Programmatic Alembic: `c360 db upgrade`, the tests and `c360 demo` all migrate through here."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from infra.settings import PROJECT_ROOT


def alembic_config(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "infra" / "migrations"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    """Migrate the database at `url` up to `revision`. Blocking: call from a thread inside a loop."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> None:
    command.current(alembic_config(url), verbose=False)
