"""Multi-pass blocking: candidate pairs from exact keys and a sorted neighbourhood, in chunks.

Each pass turns a key (one or more standardized columns) into integer codes and pairs the records
that share a code. A pair found by an earlier pass is dropped from later passes by re-checking the
earlier keys on the pair itself, so passes never need a global set of pairs in memory. Blocks bigger
than `max_block_size` are skipped (an over-shared value is not evidence); the sorted neighbourhood
pass over the name key still reaches their members.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class BlockingPass:
    """Pairs records whose `columns` are all present and equal."""

    name: str
    columns: tuple[str, ...]


# Passes over derived key columns (see `blocking_keys`). Strong identifiers first, then names.
DEFAULT_PASSES: tuple[BlockingPass, ...] = (
    BlockingPass("unionid", ("wechat_unionid",)),
    BlockingPass("id_number", ("id_number",)),
    BlockingPass("member_no", ("member_no",)),
    BlockingPass("phone", ("phone",)),
    BlockingPass("email", ("email",)),
    BlockingPass("masked_phone", ("phone_masked_key",)),
    BlockingPass("name_city", ("name_key", "city")),
    BlockingPass("family_birth", ("family_key", "birth_date")),
    BlockingPass("given_birth", ("given_key", "birth_date")),
    BlockingPass("given_postcode", ("given_key", "postcode")),
    BlockingPass("family_postcode_street", ("family_key", "postcode", "street_key")),
    BlockingPass("phone_tail_family", ("phone_tail", "family_key")),
    # A typo in both name parts leaves the birth date with the postcode or the house number.
    BlockingPass("birth_postcode", ("birth_date", "postcode")),
    BlockingPass("birth_street", ("birth_date", "street_key")),
)


def by_value(values: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    """`values.map(fn)` computed once per distinct value (missing ones map to None): names, phones
    and streets repeat across a population, and a Python call per row is most of the cost."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapped = np.empty(len(uniques) + 1, dtype=object)
    mapped[: len(uniques)] = [fn(v) for v in uniques]
    mapped[-1] = None  # code -1: missing
    return pd.Series(mapped[codes], index=values.index, dtype=object)


def _family(name: str) -> str | None:
    return name.partition(" ")[0] or None


def _given(name: str) -> str | None:
    return name.partition(" ")[2].replace(" ", "") or None


def name_parts(name_pinyin: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(surname key, given-name key) from "family given" pinyin keys; None where a part is empty."""
    return by_value(name_pinyin, _family), by_value(name_pinyin, _given)


def _name_key(name: str) -> str | None:
    tokens = name.split()
    # Only full names: a surname alone (a masked receiver 冯**) with a city is half a city's 冯s.
    return " ".join(sorted(tokens)) if len(tokens) >= 2 else None


def _phone_masked_key(phone: str) -> str | None:
    return f"{phone[3:6]}{phone[-4:]}" if phone.startswith("+86") and len(phone) == 14 else None


def blocking_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """Derived key columns for blocking from a standardized frame (see `standardize_frame`)."""
    keys = pd.DataFrame(index=frame.index)
    for column in ("wechat_unionid", "id_number", "member_no", "phone", "email", "city", "postcode"):
        keys[column] = frame[column].astype(object) if column in frame else None
    keys["birth_date"] = frame["birth_date"].astype(str).where(frame["birth_date"].notna(), None)
    family, given = name_parts(frame["name_pinyin"])
    keys["family_key"], keys["given_key"] = family, given
    # Order-free name key: "zhang wei" and "wei zhang" land in one block.
    keys["name_key"] = by_value(frame["name_pinyin"], _name_key)
    masked = by_value(frame["phone"], _phone_masked_key)
    from_masked = by_value(frame["phone_masked"], lambda m: f"{m[:3]}{m[-4:]}")
    keys["phone_masked_key"] = masked.where(masked.notna(), from_masked)
    keys["phone_tail"] = by_value(frame["phone"], lambda p: p[-8:] if len(p) >= 8 else None)
    keys["street_key"] = by_value(frame["address_detail"], lambda d: d.split(" ", 1)[0] or None)
    return keys


def key_codes(keys: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One int64 code per record for the combined key; -1 where any part is missing."""
    codes = np.zeros(len(keys), dtype=np.int64)
    missing = np.zeros(len(keys), dtype=bool)
    for column in columns:
        col_codes, uniques = pd.factorize(keys[column], use_na_sentinel=True)
        missing |= col_codes < 0
        codes = codes * (len(uniques) + 1) + col_codes
    if len(columns) > 1:  # re-factorize so codes stay small and overflow-free
        codes = pd.factorize(codes)[0].astype(np.int64)
    codes[missing] = -1
    return codes


def _pairs_in_blocks(
    codes: np.ndarray, max_block: int, restrict: np.ndarray | None, chunk_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All (i, j), i < j, sharing a code; blocks of one size are paired together, vectorized, in
    batches of about `chunk_size` pairs."""
    valid = np.flatnonzero(codes >= 0)
    if len(valid) == 0:
        return
    order = valid[np.argsort(codes[valid], kind="stable")]
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    for size in np.unique(sizes):
        if size < 2 or size > max_block:
            continue
        a, b = np.triu_indices(size, k=1)
        all_starts = starts[sizes == size]
        per_batch = max(1, chunk_size // len(a))
        for first in range(0, len(all_starts), per_batch):
            block_starts = all_starts[first : first + per_batch]
            members = order[block_starts[:, None] + np.arange(size)[None, :]]  # (blocks, size)
            left, right = members[:, a].ravel(), members[:, b].ravel()
            if restrict is not None:
                keep = restrict[left] | restrict[right]
                left, right = left[keep], right[keep]
            yield np.minimum(left, right), np.maximum(left, right)


def candidate_pairs(
    keys: pd.DataFrame,
    passes: Sequence[BlockingPass] = DEFAULT_PASSES,
    *,
    max_block_size: int = 200,
    sorted_neighbourhood: str | None = "name_key",
    window: int = 5,
    chunk_size: int = 500_000,
    restrict: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
    """Yield (left, right, pass name) chunks of distinct candidate pairs (positional, left < right).

    `restrict`: a boolean mask; only pairs touching at least one marked record are produced (the
    incremental path: new records against everything). Memory stays bounded by `chunk_size`.
    """
    codes_by_pass = [key_codes(keys, p.columns) for p in passes]
    sizes_by_pass = []
    for codes in codes_by_pass:
        counts = np.bincount(codes[codes >= 0]) if (codes >= 0).any() else np.zeros(0, dtype=np.int64)
        sizes_by_pass.append(counts)

    def seen_before(k: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        seen = np.zeros(len(left), dtype=bool)
        for j in range(k):
            cl, cr = codes_by_pass[j][left], codes_by_pass[j][right]
            same = (cl >= 0) & (cl == cr)
            if same.any():
                same[same] = sizes_by_pass[j][cl[same]] <= max_block_size
            seen |= same
        return seen

    for k, (blocking_pass, codes) in enumerate(zip(passes, codes_by_pass, strict=True)):
        for left, right in _pairs_in_blocks(codes, max_block_size, restrict, chunk_size):
            for start in range(0, len(left), chunk_size):
                lc, rc = left[start : start + chunk_size], right[start : start + chunk_size]
                fresh = ~seen_before(k, lc, rc)
                if fresh.any():
                    yield lc[fresh], rc[fresh], blocking_pass.name
    if sorted_neighbourhood is None or window < 2:
        return
    sn_key = keys[sorted_neighbourhood]
    present = np.flatnonzero(sn_key.notna().to_numpy())
    if len(present) < 2:
        return
    order = present[np.argsort(sn_key.to_numpy()[present].astype(str), kind="stable")]
    for offset in range(1, window):
        left, right = order[:-offset], order[offset:]
        if restrict is not None:
            keep = restrict[left] | restrict[right]
            left, right = left[keep], right[keep]
        for start in range(0, len(left), chunk_size):
            lc, rc = left[start : start + chunk_size], right[start : start + chunk_size]
            lo, hi = np.minimum(lc, rc), np.maximum(lc, rc)
            fresh = ~seen_before(len(passes), lo, hi)
            if fresh.any():
                yield lo[fresh], hi[fresh], "sorted_neighbourhood"
