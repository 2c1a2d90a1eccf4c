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

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sync.simulator.catalogue import Product, catalogue
from sync.simulator.config import SimulatorConfig
from sync.simulator.people import POS_DUMMY_PHONES, Population, SourceIdentity
from sync.simulator.seeding import row_random, stream_key, uniform_one, uniforms
from sync.simulator.trading_hours import ONLINE_HOURS, STORE_HOURS, Rhythm

I64 = npt.NDArray[np.int64]
MINUTE, HOUR, DAY = 60, 3600, 86400
NEVER = 2**62
# Longest possible time from creation to the last natural event (refund done); bounds every scan.
MAX_LIFE = 16 * DAY
# POS registers that were offline deliver up to 72 h late.
MAX_POS_DELAY = 72 * HOUR
BLOCK = 16384

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
        self.buyers = population.first_seen_order(channel)
        # No share of the orders, or nobody in the channel: the feed stays empty whatever the clock.
        self.empty = self.base_count == 0 or not self.buyers
        # index -> (forced stage, time): orders moved forward by POST /_sim/update_orders.
        self.overlay: dict[int, tuple[int, int]] = {}
        self._blocks: OrderedDict[int, Timeline] = OrderedDict()
        self._key_cache: OrderedDict[tuple[int, int, str], tuple[I64, npt.NDArray[np.bool_]]] = OrderedDict()
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
        k = self.key
        u = [uniforms(k, idx, f) for f in range(9)]
        created = self.rhythm.times(idx)
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
            return f"A{self.config.start:%y%m}{i:09d}"
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
        """Materialise the orders at `index` as they stand at `now`."""
        line = self.timeline(index)
        # Plain Python lists: indexing numpy scalars one by one costs more than the whole row.
        events = {f: getattr(line, f).tolist() for f in _FIELDS}
        stages = line.stage_at(now).tolist()
        modified = line.modified_at(now).tolist()
        malformed = (uniforms(self.key, line.index, 20) < self.config.malformed_rate).tolist()
        rows = []
        for pos in range(len(stages)):
            times = {f: events[f][pos] for f in _FIELDS}
            rows.append(self._row(times, stages[pos], modified[pos], malformed[pos], now))
        return rows

    def _row(self, times: dict[str, int], stage: int, modified: int, malformed: bool, now: int) -> OrderRow:
        self.rows_materialized += 1
        i = times["index"]
        rng = row_random(self.key, i + (1 << 40))
        buyer, dummy = self.buyer_for(i)
        lines: list[Line] = []
        for n in range(self.line_count_one(i)):
            product = self.products[int(rng.random() * len(self.products))]
            roll = rng.random()
            quantity = 1 if roll < 0.8 else 2 if roll < 0.95 else 3
            discount = product.price_fen * quantity // 10 if rng.random() < 0.2 else 0
            lines.append(Line(n + 1, product, quantity, product.price_fen, discount))
        total = sum(ln.unit_price_fen * ln.quantity for ln in lines)
        goods = total - sum(ln.discount_fen for ln in lines)
        coupon = 0
        if self.channel != "pos" and goods >= 30000 and rng.random() < 0.4:
            coupon = (2000, 3000, 5000)[int(rng.random() * 3)]
        shipping = 1000 if self.channel != "pos" and goods < 9900 else 0
        seen = {event: (at if at <= now else None) for event, at in times.items()}
        return OrderRow(
            channel=self.channel,
            index=i,
            external_id=self.external_id(i),
            buyer=buyer,
            dummy_phone=dummy,
            lines=tuple(lines),
            total_fen=total,
            discount_fen=total - goods + coupon,
            shipping_fen=shipping,
            stage=stage,
            created=times["created"],
            paid=seen["paid"],
            shipped=seen["shipped"],
            finished=seen["finished"],
            refund_asked=seen["refund_asked"],
            refund_done=seen["refund_done"],
            closed=seen["closed"],
            modified=modified,
            delivered=times["delivered"],
            refund_line=1 + int(rng.random() * len(lines)) if times["refund_asked"] < NEVER else 0,
            malformed=malformed,
        )

    # ----------------------------------------------------------------- queries

    def window_by_modified(
        self, start: int, end: int, now: int, *, stages: set[int] | None = None, key: str = "modified"
    ) -> tuple[I64, I64]:
        """Indexes (and their sort times) of orders whose `key` time at `now` lies in [start, end],
        newest first. `key` is "modified", "delivered" (POS) or "refund" (refund modified time)."""
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
                    if PAID <= stage[pos] <= FINISHED and i not in moved:
                        nxt = REFUNDED if stage[pos] == FINISHED else int(stage[pos]) + 1
                        self.overlay[i] = (nxt, stamp)
                        moved.append(i)
                        if len(moved) >= count:
                            break
                if len(moved) >= count:
                    break
            position = lo
        return self.rows(moved, stamp) if moved else []
