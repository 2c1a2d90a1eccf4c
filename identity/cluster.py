"""Union-find over links, with cannot-link constraints so chains cannot over-merge.

Links are applied strongest first. A union is refused when the merged cluster would hold two
different values of an exclusive attribute (two valid resident ids; two verified mobiles from the
same member system; two unionids) or more distinct values of a limited attribute than its limit.
Weak links that lose a chain argument therefore never glue two people together.

Names are facts of a softer kind: one person carries one name. A link between two records that do
not both carry a full name (a surname with an honorific, a profile without a name) is judged on
contact evidence the pair shares, so it may not join two clusters whose names disagree: 王女士 at a
household's address and phone is 王丽 or her sister 王娜, never both. A pair that compared two full
names itself was judged on them by the model, and deterministic links are trusted.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz.distance import JaroWinkler

# Two full-name keys of which one is written in Latin letters (a typed pinyin or a Western name) are
# one name when this alike: a typo. Two names written in characters must read the same.
LATIN_NAME_SIMILARITY = 0.9


@dataclass
class ConstrainedUnionFind:
    """Disjoint sets over `n` nodes. `exclusive[node]` / `limited[node]` hold (kind, value) facts.

    - exclusive: at most one value per kind per cluster (kind may carry a scope, e.g. the source).
    - limited: at most `limits[kind]` distinct values per cluster.
    - forbidden: node pairs that must never share a cluster (e.g. a person rejected a review).
    """

    n: int
    limits: Mapping[str, int] = field(default_factory=dict)
    parent: np.ndarray = field(init=False)
    size: np.ndarray = field(init=False)
    exclusive: dict[int, dict[Hashable, Hashable]] = field(default_factory=dict)
    limited: dict[int, dict[str, set[Hashable]]] = field(default_factory=dict)
    forbidden: dict[int, set[int]] = field(default_factory=dict)
    # Per node (codes into shared tables, so a million records cost two int32 arrays): its
    # order-free full-name key with whether it is written in characters, and the surname readings it
    # admits. Per root of a merged cluster only: the full names its records carry (key -> in
    # characters) and the surname readings every record of it admits; a lone record's are its own.
    name_code: np.ndarray = field(init=False)
    surname_code: np.ndarray = field(init=False)
    name_table: list[tuple[str, bool]] = field(default_factory=list)
    surname_table: list[frozenset[str]] = field(default_factory=list)
    names: dict[int, dict[str, bool]] = field(default_factory=dict)
    surnames: dict[int, frozenset[str]] = field(default_factory=dict)
    refused: int = 0

    def __post_init__(self) -> None:
        self.parent = np.arange(self.n, dtype=np.int64)
        self.size = np.ones(self.n, dtype=np.int64)
        self.name_code = np.full(self.n, -1, dtype=np.int32)
        self.surname_code = np.full(self.n, -1, dtype=np.int32)
        self._name_index: dict[tuple[str, bool], int] = {}
        self._surname_index: dict[frozenset[str], int] = {}

    def find(self, x: int) -> int:
        parent = self.parent
        root = x
        while parent[root] != root:
            root = int(parent[root])
        while parent[x] != root:  # path compression
            parent[x], x = root, int(parent[x])
        return root

    def add_exclusive(self, node: int, kind: Hashable, value: Hashable) -> None:
        self.exclusive.setdefault(self.find(node), {})[kind] = value

    def add_limited(self, node: int, kind: str, value: Hashable) -> None:
        self.limited.setdefault(self.find(node), {}).setdefault(kind, set()).add(value)

    def add_name(self, node: int, full_key: str | None, hanzi: bool, surnames: frozenset[str]) -> None:
        """Name facts of a lone record: its full name (order-free pinyin key) and the surname
        readings it admits (one for 王女士 or 王丽; both tokens of a pinyin "Li Xue", whose order is
        unsure)."""
        if full_key:
            name = (full_key, hanzi)
            self.name_code[node] = self._name_index.setdefault(name, len(self.name_table))
            if self.name_code[node] == len(self.name_table):
                self.name_table.append(name)
        if surnames:
            self.surname_code[node] = self._surname_index.setdefault(surnames, len(self.surname_table))
            if self.surname_code[node] == len(self.surname_table):
                self.surname_table.append(surnames)

    def node_name(self, node: int) -> tuple[str, bool] | None:
        code = int(self.name_code[node])
        return self.name_table[code] if code >= 0 else None

    def root_names(self, root: int) -> dict[str, bool] | None:
        stored = self.names.get(root)
        if stored is not None:
            return stored
        own = self.node_name(root)
        return {own[0]: own[1]} if own else None

    def root_surnames(self, root: int) -> frozenset[str] | None:
        stored = self.surnames.get(root)
        if stored is not None:
            return stored
        code = int(self.surname_code[root])
        return self.surname_table[code] if code >= 0 else None

    def name_conflict(self, a: int, b: int, ra: int, rb: int) -> bool:
        """The clusters of a and b carry names of two people, and the pair (a, b) did not compare
        them itself."""
        if self.name_code[a] >= 0 and self.name_code[b] >= 0:
            return False  # the pair compared two full names: the model weighed them
        na, nb = self.root_names(ra), self.root_names(rb)
        if (
            na
            and nb
            and not any(_same_name(ka, ha, kb, hb) for ka, ha in na.items() for kb, hb in nb.items())
        ):
            return True
        if self.surname_code[a] >= 0 and self.surname_code[b] >= 0:
            return False
        sa, sb = self.root_surnames(ra), self.root_surnames(rb)
        return sa is not None and sb is not None and not (sa & sb)

    def forbid(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        self.forbidden.setdefault(ra, set()).add(rb)
        self.forbidden.setdefault(rb, set()).add(ra)

    def conflict(self, ra: int, rb: int) -> str | None:
        """Why roots `ra` and `rb` may not merge, or None."""
        fa, fb = self.forbidden.get(ra), self.forbidden.get(rb)
        if fa and rb in fa or fb and ra in fb:
            return "forbidden"
        ea, eb = self.exclusive.get(ra), self.exclusive.get(rb)
        if ea and eb:
            small, big = (ea, eb) if len(ea) <= len(eb) else (eb, ea)
            for kind, value in small.items():
                other = big.get(kind)
                if other is not None and other != value:
                    return f"cannot_link:{kind}"
        la, lb = self.limited.get(ra), self.limited.get(rb)
        if la and lb:
            for kind, values in la.items():
                others = lb.get(kind)
                if others and len(values | others) > self.limits.get(kind, 1 << 30):
                    return f"limit:{kind}"
        return None

    def union(self, a: int, b: int, force: bool = False, trusted: bool = False) -> bool:
        """Merge the sets of a and b unless a constraint forbids it; True when they are now one.
        `trusted` (a deterministic identifier) skips the name check, not the exclusive facts."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if not force and (
            self.conflict(ra, rb) is not None or (not trusted and self.name_conflict(a, b, ra, rb))
        ):
            self.refused += 1
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        eb = self.exclusive.pop(rb, None)
        if eb:
            ea = self.exclusive.setdefault(ra, {})
            for kind, value in eb.items():
                ea.setdefault(kind, value)
        lb = self.limited.pop(rb, None)
        if lb:
            la = self.limited.setdefault(ra, {})
            for kind, values in lb.items():
                la.setdefault(kind, set()).update(values)
        nb = self.root_names(rb)
        if nb:
            self.names[ra] = {**(self.root_names(ra) or {}), **nb}
        self.names.pop(rb, None)
        sb = self.root_surnames(rb)
        if sb is not None:
            sa = self.root_surnames(ra)
            # A pair judged on its own names may join two surname readings (a typo): keep both.
            self.surnames[ra] = sb if sa is None else (sa & sb) or (sa | sb)
        self.surnames.pop(rb, None)
        fb = self.forbidden.pop(rb, None)
        if fb:
            fa = self.forbidden.setdefault(ra, set())
            for other in fb:
                fa.add(other)
                peers = self.forbidden.setdefault(other, set())
                peers.discard(rb)
                peers.add(ra)
        return True

    def labels(self) -> np.ndarray:
        """The root of every node (cluster label)."""
        return np.fromiter((self.find(i) for i in range(self.n)), dtype=np.int64, count=self.n)


def _same_name(ka: str, ha: bool, kb: str, hb: bool) -> bool:
    if ka == kb:
        return True
    return not (ha and hb) and JaroWinkler.normalized_similarity(ka, kb) >= LATIN_NAME_SIMILARITY


def apply_links(
    uf: ConstrainedUnionFind,
    left: np.ndarray,
    right: np.ndarray,
    strength: np.ndarray,
    trusted: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Union the pairs strongest first; returns (accepted, held): was each pair's union accepted,
    and was it held back for a person to decide. `trusted[k]`: pair k is a deterministic link (see
    `ConstrainedUnionFind.union`).

    Links between two records with full names (and trusted ones) go first. Then each record without
    a full name (王女士 on a parcel, a WeChat profile without one) whose links reach two customers of
    different names is held back with all its links: 王女士 at a household's phone and address is
    王丽 or her sister 王娜, nothing on the parcel says which, and the higher score would be a guess.
    """
    trusted = np.zeros(len(left), dtype=bool) if trusted is None else trusted.astype(bool)
    accepted = np.zeros(len(left), dtype=bool)
    held = np.zeros(len(left), dtype=bool)
    size = int(max(left.max(initial=-1), right.max(initial=-1))) + 1
    named = uf.name_code[:size] >= 0
    first = trusted | (named[left] & named[right]) if size else trusted
    order = np.argsort(-strength, kind="stable")
    for k in order[first[order]]:
        accepted[k] = uf.union(int(left[k]), int(right[k]), trusted=bool(trusted[k]))
    rest = order[~first[order]]
    # The names a nameless record's links reach, each with its customer after the named links:
    # the records' own names and links, not what their customers hold, so a later record joining
    # one of those customers cannot change the decision (batch and incremental runs agree).
    reached: dict[int, dict[int, list[tuple[str, bool]]]] = {}
    for k in rest.tolist():
        a, b = int(left[k]), int(right[k])
        for x, y in ((a, b), (b, a)):
            if not named[x] and named[y]:
                name = uf.name_table[int(uf.name_code[y])]
                reached.setdefault(x, {}).setdefault(uf.find(y), []).append(name)
    ambiguous = set()
    for x, by_root in reached.items():
        groups = list(by_root.values())
        if any(
            not any(_same_name(ka, ha, kb, hb) for ka, ha in ga for kb, hb in gb)
            for i, ga in enumerate(groups)
            for gb in groups[i + 1 :]
        ):
            ambiguous.add(x)
    for k in rest.tolist():
        if int(left[k]) in ambiguous or int(right[k]) in ambiguous:
            held[k] = True
        else:
            accepted[k] = uf.union(int(left[k]), int(right[k]))
    return accepted, held


def stable_cluster_ids(
    labels: np.ndarray,
    previous: Iterable[int | None],
    age: np.ndarray,
    next_id: int,
) -> tuple[np.ndarray, int]:
    """Customer ids per node that survive re-runs.

    `previous[i]` is node i's customer id from the last run (None for new nodes); `age[i]` orders
    nodes oldest first. A cluster holding several previous ids keeps the oldest (smallest) one. When a
    previous id ends up in several clusters (a split), the cluster holding its oldest node keeps it and
    the others get new ids, counting up from `next_id`. Returns (ids, next free id).
    """
    prev = np.array([-1 if p is None else p for p in previous], dtype=np.int64)
    order = np.lexsort((np.arange(len(labels)), age))
    claimed: dict[int, int] = {}  # previous id -> cluster label that keeps it
    cluster_id: dict[int, int] = {}
    # First pass: for every previous id, the cluster of its oldest node may claim it.
    for i in order:
        p = int(prev[i])
        if p >= 0 and p not in claimed:
            claimed[p] = int(labels[i])
    candidates: dict[int, list[int]] = {}
    for p, label in claimed.items():
        candidates.setdefault(label, []).append(p)
    for label, ids in candidates.items():
        cluster_id[label] = min(ids)
    out = np.empty(len(labels), dtype=np.int64)
    for i in order:  # new clusters are numbered in order of their oldest node: deterministic
        label = int(labels[i])
        if label not in cluster_id:
            cluster_id[label] = next_id
            next_id += 1
        out[i] = cluster_id[label]
    return out, next_id
