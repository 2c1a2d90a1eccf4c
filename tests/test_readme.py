"""The README's configuration table lists every setting the product reads, by its env variable."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from infra.settings import Settings
from sync.config import SyncSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _env_names(prefix: str, model: type[BaseModel]) -> set[str]:
    """Env variable names of a settings model; every channel shares one nested shape, documented
    once as C360_SYNC_<CHANNEL>__FIELD."""
    names: set[str] = set()
    for field, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(f"{prefix}<CHANNEL>__", annotation)
        else:
            names.add(f"{prefix}{field.upper()}")
    return names


def test_every_setting_is_documented() -> None:
    names = _env_names("C360_", Settings) | _env_names("C360_SYNC_", SyncSettings)
    undocumented = sorted(n for n in names if f"`{n}`" not in README)
    assert not undocumented, f"add these to the README's configuration table: {undocumented}"
