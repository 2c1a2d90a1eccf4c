"""Counter-based randomness: every value is a pure function of (seed, stream label, row index, field).

Nothing is drawn from a shared generator, so row i of any feed can be produced on its own, in any
order, and vectorised over millions of indexes with numpy without materialising the rows.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import zlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK = (1 << 64) - 1


def _mix(z: U64) -> U64:
    """splitmix64's finaliser: a bijection on 64-bit words with good avalanche."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@functools.lru_cache(maxsize=4096)
def stream_key(seed: int, label: str) -> int:
    """The 64-bit key of one named stream (e.g. "orders:tmall") under a seed."""
    return _mix_int((seed * 0x100000001B3 + zlib.crc32(label.encode())) & _MASK)


def hashes(key: int, index: npt.ArrayLike, field: int) -> U64:
    """One 64-bit hash per index for `field` of the stream `key`."""
    idx = np.asarray(index, dtype=np.uint64)
    salted = np.uint64((key ^ (field * 0xD6E8FEB86659FD93)) & _MASK)
    with np.errstate(over="ignore"):
        return _mix(_mix(idx ^ salted) + salted)


def uniforms(key: int, index: npt.ArrayLike, field: int) -> F64:
    """Uniform floats in [0, 1), one per index."""
    return (hashes(key, index, field) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_rows(key: int, index: npt.ArrayLike, fields: Sequence[int]) -> U64:
    """`hashes` for several fields at once: row f is `hashes(key, index, fields[f])`. One pass of
    numpy operations over a 2-D array instead of one pass per field (pages are small arrays)."""
    idx = np.asarray(index, dtype=np.uint64)
    salted = np.array([(key ^ (f * 0xD6E8FEB86659FD93)) & _MASK for f in fields], dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        return _mix(_mix(idx[None, :] ^ salted) + salted)


def uniform_rows(key: int, index: npt.ArrayLike, fields: Sequence[int]) -> F64:
    """`uniforms` for several fields at once, one row per field."""
    return (hash_rows(key, index, fields) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _mix_int(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def hash_one(key: int, index: int, field: int) -> int:
    """`hashes` for a single index, in plain Python (same value, without numpy's per-call cost)."""
    salted = (key ^ (field * 0xD6E8FEB86659FD93)) & _MASK
    return _mix_int((_mix_int(index ^ salted) + salted) & _MASK)


def uniform_one(key: int, index: int, field: int) -> float:
    """`uniforms` for a single index."""
    return (hash_one(key, index, field) >> 11) * (1.0 / (1 << 53))


def row_random(key: int, index: int) -> random.Random:
    """A private generator for the non-indexed details of one row (names, lines, texts)."""
    return random.Random(hash_one(key, index, 0xFFFF))


_B64_STANDARD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_TABLES: dict[str, dict[int, str]] = {}


def token(key: int, index: int, field: int, length: int, alphabet: str) -> str:
    """A fixed-length opaque identifier (openid, oaid, pin) for one row, drawn from `alphabet`
    (BLAKE2b in C, base64-encoded and mapped onto the alphabet: uniform for 16 and 64 symbols)."""
    table = _TABLES.get(alphabet)
    if table is None:
        table = _TABLES[alphabet] = {ord(c): alphabet[n % len(alphabet)] for n, c in enumerate(_B64_STANDARD)}
    digest = hashlib.blake2b(f"{key}:{index}:{field}".encode(), digest_size=length * 6 // 8 + 3).digest()
    return base64.b64encode(digest).decode()[:length].translate(table)
