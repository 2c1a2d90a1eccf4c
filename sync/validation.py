"""Row validation: a pydantic model per channel payload, run over a whole page at once, with the rows
that fail split off into quarantine records whose reason names the field."""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from sync.canonical import QuarantinedRow

M = TypeVar("M", bound=BaseModel)


def require_known(value: str, known: Collection[str], what: str) -> str:
    """A field validator's body: `value` if it is one of `known`, else a ValueError that names the
    value and lists the known ones, so the quarantine reason says how to fix the row or the mapping."""
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    return value


@lru_cache(maxsize=64)
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def describe_errors(errors: list[dict[str, Any]]) -> str:
    """'field `orders.order.0.price`: amount '1.234' has fractions of a fen; ...'"""
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(row)"
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"field `{loc}`: {msg}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _jsonable_errors(errors: list[Any]) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]


def validate_rows(
    model: type[M],
    rows: list[Any],
    *,
    channel: str,
    entity: str,
    external_id: Callable[[Any], str | None],
) -> tuple[list[tuple[M, Any]], list[QuarantinedRow]]:
    """Validate `rows` with `model`: (valid (model, raw) pairs in input order, quarantined rows).

    The whole page is validated in one call (pydantic-core's fast path); only when it fails is each row
    validated alone, so one bad row costs a second pass over its page, never the page itself.
    """
    try:
        models = _list_adapter(model).validate_python(rows)
        return list(zip(models, rows, strict=True)), []
    except ValidationError:
        pass
    valid: list[tuple[M, Any]] = []
    bad: list[QuarantinedRow] = []
    for raw in rows:
        try:
            valid.append((model.model_validate(raw), raw))
        except ValidationError as exc:
            errors = _jsonable_errors(exc.errors(include_url=False))
            try:
                ext = external_id(raw)
            except Exception:  # noqa: BLE001 - an id we cannot read is just unknown
                ext = None
            bad.append(
                QuarantinedRow(
                    channel=channel,
                    entity=entity,
                    external_id=None if ext is None else str(ext),
                    raw=raw if isinstance(raw, dict) else {"value": raw},
                    reason=describe_errors(errors),
                    errors=errors,
                )
            )
    return valid, bad


def key_of(*names: str) -> Callable[[Any], str | None]:
    """An external-id reader for quarantine: the first of `names` present in the raw row."""

    def read(raw: Any) -> str | None:
        if isinstance(raw, dict):
            for n in names:
                if raw.get(n) not in (None, ""):
                    return str(raw[n])
        return None

    return read
