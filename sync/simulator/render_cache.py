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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

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
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        """False when the budget is 0: callers can skip building keys altogether."""
        return self.max_bytes > 0

    def get_many(self, keys: list[Hashable]) -> list[bytes | None]:
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

    def put(self, key: Hashable, value: bytes) -> None:
        """Store `value`, then drop least recently used entries until the budget holds."""
        cost = len(value) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        entries = self._entries
        old = entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old) + ENTRY_OVERHEAD
        entries[key] = value
        self.bytes += cost
        while self.bytes > self.max_bytes:
            _, dropped = entries.popitem(last=False)
            self.bytes -= len(dropped) + ENTRY_OVERHEAD
            self.evictions += 1

    def clear(self) -> None:
        """Forget every entry (the counters stay)."""
        self._entries.clear()
        self.bytes = 0
