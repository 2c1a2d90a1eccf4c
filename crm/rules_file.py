"""Reading a CRM rules file (loyalty, analytics, service): TOML validated by a pydantic model.

Every domain reports a bad file the same way, naming the file, the key at fault and the setting that
points at it, so an operator fixes it from the message alone.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as `key.path[0]: message`, one per error."""
    parts = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        parts.append(f"{loc or '(top level)'}: {err['msg']}")
    return "; ".join(parts)


def load_rules(path: Path, model: type[M], error: type[ValueError], what: str, setting: str) -> M:
    """`path` parsed as TOML into `model`; any failure raises `error` with a message naming the key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise error(f"{what} rules {path} do not exist ({setting})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} rules {path} are not valid TOML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{what} rules {path}: {describe(exc)}") from exc
