"""Order feeds generated lazily by index.

Order i of a channel is a pure function of (seed, channel, i). Its creation time never decreases with
i (see trading_hours), so a creation-time window is an index range found by binary search. Its life (paid, shipped, finished, refund
asked, refund done, or closed unpaid) is a fixed timeline; what a pull sees is the state at the
simulator's clock, and `modified` is the latest event at or before it. Advancing the clock therefore
moves orders forward and reveals new ones without any stored state. The only stored state is a small
overlay of orders pushed forward on request (POST /_sim/update_orders).

Time is integer seconds since the epoch throughout; arrays are numpy int64.
"""

from __future__ import annotations

import _random
import random
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sync.simulator.catalogue import Product, catalogue
from sync.simulator.config import SimulatorConfig
from sync.simulator.people import POS_DUMMY_PHONES, Population, SourceIdentity
from sync.simulator.seeding import hashes, stream_key, uniform_one, uniform_rows, uniforms
from sync.simulator.trading_hours import ONLINE_HOURS, STORE_HOURS, Rhythm

I64 = npt.NDArray[np.int64]
MINUTE, HOUR, DAY = 60, 3600, 86400
NEVER = 2**62
# Longest possible time from creation to the last natural event (refund done); bounds every scan.
MAX_LIFE = 16 * DAY
# POS registers that were offline deliver up to 72 h late.
MAX_POS_DELAY = 72 * HOUR
BLOCK = 16384
# Rows of answered windows kept (index and time: 16 bytes a row, so 32 MiB at most).
WINDOW_CACHE_ROWS = 2**21
# random.Random.seed minus its Python-level wrapper: for an int it is exactly what Random(int) does.
_seed = _random.Random.seed

# Stages of an order's life; `closed` is an unpaid order the platform closed.
CREATED, PAID, SHIPPED, FINISHED, REFUND_ASKED, REFUNDED, CLOSED = 0, 1, 2, 3, 4, 5, 9
EVENTS = ("paid", "shipped", "finished", "refund_asked", "refund_done")


@dataclass(frozen=True)
class Timeline:
    """Event times of a batch of orders (NEVER when an event does not happen)."""

    index: I64
    created: I64
    paid: I64
    shipped: I64
    finished: I64
    refund_asked: I64
    refund_done: I64
    closed: I64
    delivered: I64  # POS only: when the transaction reached the back office

    def take(self, mask: npt.NDArray[np.bool_] | I64 | slice) -> Timeline:
        """The rows selected by a mask, index array or slice."""
        return Timeline(*(getattr(self, f)[mask] for f in _FIELDS))

    def stage_at(self, now: int) -> I64:
        """Each order's stage at `now` (CLOSED wins over everything for unpaid orders)."""
        stage = np.zeros(len(self.index), dtype=np.int64)
        for event in EVENTS:
            stage += getattr(self, event) <= now
        stage[self.closed <= now] = CLOSED
        return stage

    def modified_at(self, now: int) -> I64:
        """Each order's latest event time at or before `now`."""
        modified = self.created.copy()
        for event in (*EVENTS, "closed"):
            times = getattr(self, event)
            modified = np.where((times <= now) & (times > modified), times, modified)
        return modified


_FIELDS = (
    "index",
    "created",
    "paid",
    "shipped",
    "finished",
    "refund_asked",
    "refund_done",
    "closed",
    "delivered",
)


@dataclass(slots=True)
class Line:
    line_no: int
    product: Product
    quantity: int
    unit_price_fen: int
    discount_fen: int

    @property
    def amount_fen(self) -> int:
        """What the line costs after its own discount."""
        return self.unit_price_fen * self.quantity - self.discount_fen


@dataclass(slots=True)
class OrderRow:
    """One order as the channel-neutral core every payload shape is rendered from."""

    channel: str
    index: int
    external_id: str
    buyer: SourceIdentity | None  # None: an anonymous POS sale
    dummy_phone: str | None  # a placeholder number a cashier typed
    lines: tuple[Line, ...]
    total_fen: int  # goods before discounts
    discount_fen: int
    shipping_fen: int
    stage: int
    created: int
    paid: int | None
    shipped: int | None
    finished: int | None
    refund_asked: int | None
    refund_done: int | None
    closed: int | None
    modified: int
    delivered: int
    refund_line: int  # line_no the refund is for (0: none)
    malformed: bool

    @property
    def payment_fen(self) -> int:
        """What the buyer paid: goods less discounts plus shipping."""
        return self.total_fen - self.discount_fen + self.shipping_fen


class OrderFeed:
    """All orders of one channel: index arithmetic, vectorised timelines and row materialisation."""

    def __init__(self, config: SimulatorConfig, channel: str, population: Population) -> None:
        self.channel = channel
        self.config = config
        self.population = population
        self.key = stream_key(config.seed, f"orders:{channel}")
        self.base_count = config.orders_for(channel)
        self.start = int(config.start.timestamp())
        hours = STORE_HOURS if channel == "pos" else ONLINE_HOURS
        self.rhythm = Rhythm(self.key, config.start, config.days, max(1, self.base_count), hours)
        self.products = catalogue(config.seed)
        self._app_prefix = f"A{config.start:%y%m}"
        self.buyers = population.first_seen_order(channel)
        # No share of the orders, or nobody in the channel: the feed stays empty whatever the clock.
        self.empty = self.base_count == 0 or not self.buyers
        # index -> (forced stage, time): orders moved forward by POST /_sim/update_orders.
        self.overlay: dict[int, tuple[int, int]] = {}
        self._blocks: OrderedDict[int, Timeline] = OrderedDict()
        self._key_cache: OrderedDict[tuple[int, int, str], tuple[I64, npt.NDArray[np.bool_]]] = OrderedDict()
        # (block, now, key) -> visible rows of the block sorted by (key time, index), as one int64
        # per row (time * BLOCK + offset in the block): cursor pages find their place by bisection.
        self._sorted_cache: OrderedDict[tuple[int, int, str], I64] = OrderedDict()
        # A window's answer, reused by the count call and every page of that window.
        self._window_cache: OrderedDict[tuple[object, ...], tuple[I64, I64]] = OrderedDict()
        self._window_rows = 0
        self.overlay_version = 0
        # Counters that let tests prove laziness through behaviour.
        self.rows_materialized = 0
        self.timeline_rows = 0

    # ----------------------------------------------------------------- index arithmetic

    def created_one(self, i: int) -> int:
        """Creation time of order i."""
        return self.rhythm.time(i)

    def first_index_at_or_after(self, t: int) -> int:
        """Smallest index whose creation time is >= t (creation time is non-decreasing in the index)."""
        return 0 if self.empty else self.rhythm.first_at_or_after(t)

    def visible_count(self, now: int) -> int:
        """Orders created at or before `now` are indexes [0, visible_count)."""
        return self.first_index_at_or_after(now + 1)

    # ----------------------------------------------------------------- timelines

    def timeline(self, index: npt.ArrayLike) -> Timeline:
        """Event times of the orders at `index`, with the update overlay applied."""
        idx = np.asarray(index, dtype=np.int64)
        self.timeline_rows += len(idx)
        u = uniform_rows(self.key, idx, range(9))
        created = self.rhythm.times(idx, jitter=u[0])
        never = np.full(len(idx), NEVER, dtype=np.int64)
        if self.channel == "pos":
            late = u[8] < 0.07
            delay = np.where(late, HOUR + u[7] * (MAX_POS_DELAY - HOUR), 5 + u[7] * 10 * MINUTE)
            return Timeline(
                idx, created, created, never, created, never, never, never, created + delay.astype(np.int64)
            )
        unpaid = (u[1] < 0.03) if self.channel in ("tmall", "app") else np.zeros(len(idx), dtype=bool)
        paid = np.where(unpaid, NEVER, created + MINUTE + (u[2] * 30 * MINUTE).astype(np.int64))
        shipped = np.where(unpaid, NEVER, paid + 2 * HOUR + (u[3] * 46 * HOUR).astype(np.int64))
        finished = np.where(unpaid, NEVER, shipped + DAY + (u[4] * 6 * DAY).astype(np.int64))
        refund = ~unpaid & (u[5] < 0.06)
        refund_asked = np.where(refund, finished + HOUR + (u[6] * 4 * DAY).astype(np.int64), NEVER)
        refund_done = np.where(refund, refund_asked + 4 * HOUR + (u[7] * 2 * DAY).astype(np.int64), NEVER)
        closed = np.where(unpaid, created + DAY, NEVER)
        line = Timeline(idx, created, paid, shipped, finished, refund_asked, refund_done, closed, created)
        return self._apply_overlay(line) if self.overlay else line

    def _apply_overlay(self, line: Timeline) -> Timeline:
        hit = np.isin(line.index, np.fromiter(self.overlay, dtype=np.int64))
        if not hit.any():
            return line
        arrays = {f: getattr(line, f).copy() for f in _FIELDS}
        for pos in np.flatnonzero(hit):
            stage, at = self.overlay[int(line.index[pos])]
            for number, event in enumerate(EVENTS, start=PAID):
                if number <= stage:
                    arrays[event][pos] = min(int(arrays[event][pos]), at)
        return Timeline(**arrays)

    def block(self, number: int) -> Timeline:
        """Timeline of indexes [number*BLOCK, (number+1)*BLOCK), kept in a small LRU cache."""
        cached = self._blocks.get(number)
        if cached is None:
            saved, self.overlay = self.overlay, {}
            try:
                cached = self.timeline(np.arange(number * BLOCK, (number + 1) * BLOCK, dtype=np.int64))
            finally:
                self.overlay = saved
            self._blocks[number] = cached
            if len(self._blocks) > 32:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end(number)
        return self._apply_overlay(cached) if self.overlay else cached

    def scan(self, lo: int, hi: int) -> list[Timeline]:
        """Timelines of indexes [lo, hi), block by block (each piece trimmed to the range)."""
        pieces: list[Timeline] = []
        for number in range(lo // BLOCK, (hi - 1) // BLOCK + 1 if hi > lo else lo // BLOCK):
            line = self.block(number)
            first = number * BLOCK
            pieces.append(line.take(slice(max(lo, first) - first, min(hi, first + BLOCK) - first)))
        return pieces

    def overlay_timeline(self, visible: int) -> Timeline | None:
        """Timelines of the overlaid orders (their modified time can lie far after creation)."""
        keys = [i for i in self.overlay if i < visible]
        return self.timeline(keys) if keys else None

    # ----------------------------------------------------------------- rows

    def buyer_for(self, i: int) -> tuple[SourceIdentity | None, str | None]:
        """Who placed order i. The first rows introduce every identity of the channel once, so each
        identity in the ground truth has at least one order; later rows favour repeat buyers."""
        if not self.buyers:
            return None, None
        if i < len(self.buyers):
            return self.buyers[i], None
        if self.channel == "pos":
            roll = uniform_one(self.key, i, 12)
            if roll < 0.35:
                return None, None
            if roll < 0.37:
                return None, POS_DUMMY_PHONES[int((roll - 0.35) / 0.02 * len(POS_DUMMY_PHONES))]
        # Squaring skews towards the front of the list: some customers buy far more often than others.
        return self.buyers[int(uniform_one(self.key, i, 11) ** 2 * len(self.buyers))], None

    def external_id(self, i: int) -> str:
        """The id the channel gives order i (tid, JD orderId, app order_no, POS receipt)."""
        if self.channel == "app":
            return f"{self._app_prefix}{i:09d}"
        if self.channel == "pos":
            return self.pos_reference(i)
        # Platform ids are sparse, not consecutive: step by 7 from a channel-typical magnitude.
        base = 3_100_000_000_000_000_000 if self.channel == "tmall" else 280_000_000_000
        return str(base + i * 7 + 3)

    def pos_reference(self, i: int) -> str:
        """`<store>-<register>-<sequence>`: the receipt number printed on a POS sale."""
        store, register, sequence = self.pos_position(i)
        return f"{store}-{register:02d}-{sequence:06d}"

    def pos_position(self, i: int) -> tuple[str, int, int]:
        """(store_id, register_id, sequence_no): a register numbers its own receipts."""
        stores = 12
        store_no = i % stores
        register = (i // stores) % 3 + 1
        sequence = i // (stores * 3) + 1
        return f"S{store_no + 101:03d}", register, sequence

    def line_counts(self, index: npt.ArrayLike) -> I64:
        """Number of lines of each order (a timeline-level fact: a refund of the only line closes
        the whole Tmall trade, so status filters need it without materialising rows)."""
        u = uniforms(self.key, index, 10)
        return (1 + (u >= 0.70) + (u >= 0.92)).astype(np.int64)

    def line_count_one(self, i: int) -> int:
        """`line_counts` for one order."""
        u = uniform_one(self.key, i, 10)
        return 1 + (u >= 0.70) + (u >= 0.92)

    def rows(self, index: npt.ArrayLike, now: int) -> list[OrderRow]:
        """Materialise the orders at `index` as they stand at `now`.

        Every per-index draw (buyer, line count, malformed, the row's generator seed) is computed for
        the whole page with numpy; the loop only runs each row's own generator (line items, coupon,
        refunded line) and builds the row."""
        line = self.timeline(index)
        idx = line.index
        self.rows_materialized += len(idx)
        key, now_ = self.key, now
        # Plain Python lists: indexing numpy scalars one by one costs more than the whole row.
        indexes = idx.tolist()
        created, paid, shipped = line.created.tolist(), line.paid.tolist(), line.shipped.tolist()
        finished, closed, delivered = line.finished.tolist(), line.closed.tolist(), line.delivered.tolist()
        asked, done = line.refund_asked.tolist(), line.refund_done.tolist()
        stages = line.stage_at(now).tolist()
        modified = line.modified_at(now).tolist()
        # Fields 10 (line count), 11 and 12 (buyer) and 20 (malformed) of every row in one pass.
        u = uniform_rows(key, idx, (10, 11, 12, 20))
        malformed = (u[3] < self.config.malformed_rate).tolist()
        seeds = hashes(key, idx + (1 << 40), 0xFFFF).tolist()
        counts = (1 + (u[0] >= 0.70) + (u[0] >= 0.92)).tolist()
        buyers = self.buyer_list(idx, u[1], u[2])
        products = self.products
        n_products = len(products)
        online = self.channel != "pos"
        channel = self.channel
        # One generator reseeded per row gives exactly what `row_random(key, i + 2**40)` would.
        rng = random.Random(0)
        draw = rng.random
        rows: list[OrderRow] = []
        for k, i in enumerate(indexes):
            _seed(rng, seeds[k])
            lines: list[Line] = []
            total = goods = 0
            for n in range(1, counts[k] + 1):
                product = products[int(draw() * n_products)]
                roll = draw()
                quantity = 1 if roll < 0.8 else 2 if roll < 0.95 else 3
                price = product.price_fen
                discount = price * quantity // 10 if draw() < 0.2 else 0
                lines.append(Line(n, product, quantity, price, discount))
                total += price * quantity
                goods += price * quantity - discount
            coupon = 0
            if online and goods >= 30000 and draw() < 0.4:
                coupon = (2000, 3000, 5000)[int(draw() * 3)]
            shipping = 1000 if online and goods < 9900 else 0
            buyer, dummy = buyers[k]
            asked_at, done_at = asked[k], done[k]
            paid_at, shipped_at, finished_at, closed_at = paid[k], shipped[k], finished[k], closed[k]
            rows.append(
                OrderRow(
                    channel=channel,
                    index=i,
                    external_id=self.external_id(i),
                    buyer=buyer,
                    dummy_phone=dummy,
                    lines=tuple(lines),
                    total_fen=total,
                    discount_fen=total - goods + coupon,
                    shipping_fen=shipping,
                    stage=stages[k],
                    created=created[k],
                    paid=paid_at if paid_at <= now_ else None,
                    shipped=shipped_at if shipped_at <= now_ else None,
                    finished=finished_at if finished_at <= now_ else None,
                    refund_asked=asked_at if asked_at <= now_ else None,
                    refund_done=done_at if done_at <= now_ else None,
                    closed=closed_at if closed_at <= now_ else None,
                    modified=modified[k],
                    delivered=delivered[k],
                    refund_line=1 + int(draw() * len(lines)) if asked_at < NEVER else 0,
                    malformed=malformed[k],
                )
            )
        return rows

    def buyer_list(
        self, index: I64, u11: npt.NDArray[np.float64], u12: npt.NDArray[np.float64]
    ) -> list[tuple[SourceIdentity | None, str | None]]:
        """`buyer_for` over a page, given fields 11 and 12 of the rows (same values, same arithmetic)."""
        buyers = self.buyers
        if not buyers:
            return [(None, None)] * len(index)
        count = len(buyers)
        indexes = index.tolist()
        picks = u11.tolist()
        rolls = u12.tolist() if self.channel == "pos" else None
        dummies = len(POS_DUMMY_PHONES)
        out: list[tuple[SourceIdentity | None, str | None]] = []
        for k, i in enumerate(indexes):
            if i < count:
                out.append((buyers[i], None))
                continue
            if rolls is not None:
                roll = rolls[k]
                if roll < 0.35:
                    out.append((None, None))
                    continue
                if roll < 0.37:
                    out.append((None, POS_DUMMY_PHONES[int((roll - 0.35) / 0.02 * dummies)]))
                    continue
            out.append((buyers[int(picks[k] ** 2 * count)], None))
        return out

    # ----------------------------------------------------------------- queries

    def window_by_modified(
        self, start: int, end: int, now: int, *, stages: set[int] | None = None, key: str = "modified"
    ) -> tuple[I64, I64]:
        """Indexes (and their sort times) of orders whose `key` time at `now` lies in [start, end],
        newest first. `key` is "modified", "delivered" (POS) or "refund" (refund modified time).
        Answers are cached per (window, clock, overlay): connectors read a window page by page."""
        cache_key = (
            start,
            end,
            now,
            key,
            None if stages is None else tuple(sorted(stages)),
            self.overlay_version,
        )
        cached = self._window_cache.get(cache_key)
        if cached is not None:
            self._window_cache.move_to_end(cache_key)
            return cached
        found = self._window_by_modified(start, end, now, stages, key)
        self._window_cache[cache_key] = found
        self._window_rows += len(found[0])
        # Bounded by rows (16 bytes each), not by windows: a second pull of a whole history finds
        # every one-day window still here, and a few month-long JD windows cannot hold gigabytes.
        while len(self._window_cache) > 1 and (
            self._window_rows > WINDOW_CACHE_ROWS or len(self._window_cache) > 4096
        ):
            _, (dropped, _) = self._window_cache.popitem(last=False)
            self._window_rows -= len(dropped)
        return found

    def _window_by_modified(
        self, start: int, end: int, now: int, stages: set[int] | None, key: str
    ) -> tuple[I64, I64]:
        end = min(end, now)
        visible = self.visible_count(now)
        slack = MAX_POS_DELAY if key == "delivered" else MAX_LIFE
        lo = self.first_index_at_or_after(start - slack)
        hi = min(visible, self.first_index_at_or_after(end + 1))
        pieces = list(self._keyed(lo, hi, now, key))
        extra = self.overlay_timeline(visible)
        if extra is not None:
            outside = extra.take((extra.index < lo) | (extra.index >= hi))
            pieces.append((outside, *self._key_times(outside, now, key)))
        found_idx: list[I64] = []
        found_at: list[I64] = []
        for piece, at, ok in pieces:
            ok = ok & (at >= start) & (at <= end)
            if stages is not None:
                ok &= np.isin(piece.stage_at(now), list(stages))
            found_idx.append(piece.index[ok])
            found_at.append(at[ok])
        if not found_idx:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        idx = np.concatenate(found_idx)
        at = np.concatenate(found_at)
        order = np.lexsort((-idx, -at))  # newest first, ties by index descending: a total order
        return idx[order], at[order]

    def _keyed(
        self, lo: int, hi: int, now: int, key: str
    ) -> Iterator[tuple[Timeline, I64, npt.NDArray[np.bool_]]]:
        """(piece, key time, visible) for indexes [lo, hi), block by block. Key times of untouched
        blocks are cached per clock value: consecutive pages and windows re-read the same blocks."""
        for number in range(lo // BLOCK, (hi - 1) // BLOCK + 1 if hi > lo else lo // BLOCK):
            line = self.block(number)
            if self.overlay:
                at, ok = self._key_times(line, now, key)
            else:
                cached = self._key_cache.get((number, now, key))
                if cached is None:
                    cached = self._key_cache[(number, now, key)] = self._key_times(line, now, key)
                    if len(self._key_cache) > 64:
                        self._key_cache.popitem(last=False)
                at, ok = cached
            first = number * BLOCK
            cut = slice(max(lo, first) - first, min(hi, first + BLOCK) - first)
            yield line.take(cut), at[cut], ok[cut]

    def _key_times(self, piece: Timeline, now: int, key: str) -> tuple[I64, npt.NDArray[np.bool_]]:
        if key == "delivered":
            return piece.delivered, piece.delivered <= now
        if key == "refund":
            done = piece.refund_done <= now
            at = np.where(done, piece.refund_done, piece.refund_asked)
            return at, piece.refund_asked <= now
        return piece.modified_at(now), piece.created <= now

    def ascending_after(
        self, after: tuple[int, int] | None, since: int | None, limit: int, now: int, *, key: str = "modified"
    ) -> list[tuple[int, int]]:
        """Up to `limit` (time, index) pairs after the cursor `after` (exclusive) and at or after
        `since`, oldest first: the cursor paging of the own app and POS APIs. Scans forward only as
        far as needed: any order created after time T has its key time after T too."""
        floor_t = max(after[0] if after else -NEVER, since if since is not None else -NEVER)
        slack = MAX_POS_DELAY if key == "delivered" else MAX_LIFE
        lo = self.first_index_at_or_after(floor_t - slack) if floor_t > -NEVER else 0
        visible = self.visible_count(now)
        if not self.overlay:
            return self._ascending_sorted(after, since, limit, now, key, lo, visible)
        times: list[I64] = []
        indexes: list[I64] = []

        def keep(piece: Timeline, at: I64, ok: npt.NDArray[np.bool_]) -> None:
            ok = ok & (at >= floor_t)
            if after is not None:
                ok &= (at > after[0]) | ((at == after[0]) & (piece.index > after[1]))
            times.append(at[ok])
            indexes.append(piece.index[ok])

        extra = self.overlay_timeline(visible)
        if extra is not None:
            before = extra.take(extra.index < lo)
            keep(before, *self._key_times(before, now, key))
        position, found = lo, 0
        while position < visible:
            hi = min(visible, (position // BLOCK + 1) * BLOCK)
            for piece, at, ok in self._keyed(position, hi, now, key):
                keep(piece, at, ok)
                found += len(indexes[-1])
            position = hi
            if found >= limit and position < visible:
                at_all = np.concatenate(times)
                kth = np.partition(at_all, limit - 1)[limit - 1]
                if kth < self.created_one(position):
                    break
        if not times:
            return []
        at_all, idx_all = np.concatenate(times), np.concatenate(indexes)
        order = np.lexsort((idx_all, at_all))[:limit]
        return [(int(at_all[k]), int(idx_all[k])) for k in order]

    def _ascending_sorted(
        self,
        after: tuple[int, int] | None,
        since: int | None,
        limit: int,
        now: int,
        key: str,
        lo: int,
        visible: int,
    ) -> list[tuple[int, int]]:
        """`ascending_after` without an overlay: each block contributes at most `limit` candidates,
        found by bisection in its sorted keys, instead of every row after the cursor."""
        times: list[I64] = []
        indexes: list[I64] = []
        found = 0
        for number in range(lo // BLOCK, (visible - 1) // BLOCK + 1 if visible > 0 else 0):
            first = number * BLOCK
            keys = self._sorted_keys(number, now, key)
            bound = since * BLOCK if since is not None else None
            if after is not None:
                # Rows at the cursor's time come after it when their index is larger.
                offset = min(max(after[1] - first, -1), BLOCK - 1)
                bound = max(bound if bound is not None else -NEVER, after[0] * BLOCK + offset + 1)
            begin = int(np.searchsorted(keys, bound, side="left")) if bound is not None else 0
            chosen = keys[begin : begin + limit]
            times.append(chosen // BLOCK)
            indexes.append(chosen % BLOCK + first)
            found += len(chosen)
            position = min(visible, first + BLOCK)
            if found >= limit and position < visible:
                at_all = np.concatenate(times)
                if np.partition(at_all, limit - 1)[limit - 1] < self.created_one(position):
                    break
        if not times:
            return []
        at_all, idx_all = np.concatenate(times), np.concatenate(indexes)
        order = np.lexsort((idx_all, at_all))[:limit]
        return list(zip(at_all[order].tolist(), idx_all[order].tolist(), strict=True))

    def _sorted_keys(self, number: int, now: int, key: str) -> I64:
        """Visible rows of block `number` as sorted `time * BLOCK + offset` (no overlay)."""
        cache_key = (number, now, key)
        keys = self._sorted_cache.get(cache_key)
        if keys is None:
            at, ok = self._key_times(self.block(number), now, key)
            offsets = np.flatnonzero(ok)
            keys = self._sorted_cache[cache_key] = np.sort(at[offsets] * BLOCK + offsets)
            if len(self._sorted_cache) > 64:
                self._sorted_cache.popitem(last=False)
        else:
            self._sorted_cache.move_to_end(cache_key)
        return keys

    def progress(self, count: int, now: int, stamp: int) -> list[OrderRow]:
        """Move up to `count` paid, unfinished-or-finished orders one step forward (paid -> shipped ->
        finished -> refunded), newest first, stamping the change at `stamp`."""
        moved: list[int] = []
        position = self.visible_count(now)
        while len(moved) < count and position > 0:
            lo = max(0, position - BLOCK)
            for piece in reversed(self.scan(lo, position)):
                stage = piece.stage_at(now)
                for pos in range(len(piece.index) - 1, -1, -1):
                    i = int(piece.index[pos])
                    # [lo, position) steps down without overlap, so each order is met at most once.
                    if PAID <= stage[pos] <= FINISHED:
                        nxt = REFUNDED if stage[pos] == FINISHED else int(stage[pos]) + 1
                        self.overlay[i] = (nxt, stamp)
                        self.overlay_version += 1
                        moved.append(i)
                        if len(moved) >= count:
                            break
                if len(moved) >= count:
                    break
            position = lo
        return self.rows(moved, stamp) if moved else []
