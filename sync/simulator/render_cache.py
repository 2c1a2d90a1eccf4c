"""A byte-bounded LRU of rendered JSON fragments (one order as a marketplace serves it).

An order's rendering at a given clock is a pure function of (its index, its `modified` time at that
clock, the update overlay entry forcing it forward, if any, and the fields asked for): every field
that moves with the clock (status, pay/consign/end times, refund state) is decided by which of the
order's events lie at or before `modified`, because `modified` is the latest event at or before the
clock. So a fragment keyed by those values is exactly what an uncached render would produce at any
clock, and pages of any window or size can be assembled from cached fragments with `b",".join`.

Entries are charged their byte length plus a fixed per-entry overhead (the key tuple, the bytes
object header and the dict slot), and the least recently used ones are dropped once the budget is
exceeded. A budget of 0 disables the cache.

Admission is scan-resistant: while the budget has room every new entry is kept; once it is full,
only every 32nd newcomer is let in (evicting the least recently used), so the content still turns
over while a pull of a history larger than the budget, repeated, finds the part that fit instead of
nothing (plain LRU evicts each entry just before the next pass asks for it). Refused newcomers cost
nothing: they are neither copied nor inserted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from sync.simulator.orders import OrderFeed, OrderRow

I64 = npt.NDArray[np.int64]

# What an entry costs besides its bytes: the key tuple and its ints, the bytes header, the ordered
# dict's slot and link (measured with tracemalloc at ~230 bytes on CPython 3.11; rounded up).
ENTRY_OVERHEAD = 256


class RenderCache:
    """LRU mapping of hashable keys to rendered bytes, bounded by `max_bytes` (0: keep nothing)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"render cache budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self._newcomers = 0
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        """False when the budget is 0: callers can skip building keys altogether."""
        return self.max_bytes > 0

    def get_many(self, keys: Sequence[Hashable]) -> list[bytes | None]:
        """The cached value of each key (None when absent), marking the found ones recently used."""
        entries = self._entries
        found = [entries.get(key) for key in keys]
        touch = entries.move_to_end
        hits = 0
        for key, value in zip(keys, found, strict=True):
            if value is not None:
                touch(key)
                hits += 1
        self.hits += hits
        self.misses += len(keys) - hits
        return found

    def admits(self, size: int) -> bool:
        """Whether a new entry of `size` bytes should be stored (see the module docstring)."""
        if self.bytes + size + ENTRY_OVERHEAD <= self.max_bytes:
            return True
        if size + ENTRY_OVERHEAD > self.max_bytes:
            return False
        self._newcomers += 1
        return self._newcomers % 32 == 0

    def put(self, key: Hashable, value: bytes) -> None:
        """Store `value` as the most recently used entry, dropping least recently used ones until the
        budget holds (callers ask `admits` first)."""
        cost = len(value) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old) + ENTRY_OVERHEAD
        while self.bytes + cost > self.max_bytes:
            _, dropped = entries.popitem(last=False)
            self.bytes -= len(dropped) + ENTRY_OVERHEAD
            self.evictions += 1
        entries[key] = value
        self.bytes += cost

    def clear(self) -> None:
        """Forget every entry (the counters stay)."""
        self._entries.clear()
        self.bytes = 0


def order_fragments(
    cache: RenderCache,
    feed: OrderFeed,
    index: I64,
    modified: I64,
    now: int,
    variant: Hashable,
    force_malformed: bool,
    render: Callable[[OrderRow, bool], dict[str, Any]],
) -> list[bytes]:
    """The orders at `index` of `feed` (whose modified times at `now` are `modified`) as orjson
    fragments of `render(row, broken)`, reused from `cache` while an order is unchanged. `variant`
    names what else the rendering depends on (e.g. the `fields` asked for). A page a malformed fault
    hits has its first order rendered broken: that one is neither read from nor kept in the cache."""
    indexes = index.tolist()
    keys: list[Hashable] | None = None
    if cache.enabled:
        channel, overlay = feed.channel, feed.overlay
        keys = [
            (channel, i, m, variant, overlay.get(i) if overlay else None)
            for i, m in zip(indexes, modified.tolist(), strict=True)
        ]
        found = cache.get_many(keys)
        if force_malformed and found:
            found[0] = None
    else:
        found = [None] * len(indexes)
    missing = [n for n, fragment in enumerate(found) if fragment is None]
    if not missing:
        return found  # type: ignore[return-value]  # every slot is filled
    rows = feed.rows(index[missing] if len(missing) < len(indexes) else index, now)
    dumps = orjson.dumps
    for n, row in zip(missing, rows, strict=True):
        broken = force_malformed and n == 0
        fragment = found[n] = dumps(render(row, broken))
        if keys is not None and not broken and cache.admits(len(fragment)):
            # Kept as an exact-size copy: holding thousands of orjson's own result buffers fragments
            # the heap so badly that every later dumps costs 5-20x more (25 us instead of 1.5 us).
            fragment = found[n] = bytes(memoryview(fragment))
            key = keys[n]
            if row.modified != modified[n]:  # the window and the row agree; keep the key exact anyway
                key = (feed.channel, row.index, row.modified, variant, feed.overlay.get(row.index))
            cache.put(key, fragment)
    return found  # type: ignore[return-value]  # every slot is filled
