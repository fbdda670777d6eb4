"""RFC 6962 / RFC 9162 Merkle trees: hashing, streaming roots, inclusion and consistency
proofs, and their verification.

Leaf hash `H(0x00 || d)`, node hash `H(0x01 || left || right)`, H = SHA-256; the tree of
n leaves splits at the largest power of two below n. `Stream` computes roots in one pass
with O(log n) memory (1,000,000 leaves take about a second), so verification never holds
the whole tree.

No Django and no rbee imports: tools/rbee-verify-proof carries its own copy of the
verification half, and tests check the two agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Stream:
    """Roots of a growing tree, leaf by leaf: a stack of perfect subtrees (their sizes
    are the binary digits of the count), merged as they fill."""

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (subtree size, hash), largest first
        self.size = 0

    def append(self, lh: bytes) -> None:
        stack = self._stack
        size = 1
        while stack and stack[-1][0] == size:
            left = stack.pop()[1]
            lh = hashlib.sha256(b"\x01" + left + lh).digest()
            size *= 2
        stack.append((size, lh))
        self.size += 1

    def append_subtree(self, size: int, h: bytes) -> None:
        """Append a perfect subtree of `size` leaves (a power of two) whose root is `h`;
        the stream's size must be a multiple of `size` (the subtree is aligned)."""
        if size & (size - 1) or self.size % size:
            raise ValueError(f"a subtree of {size} does not align at {self.size}")
        stack = self._stack
        n = size
        while stack and stack[-1][0] == n:
            h = hashlib.sha256(b"\x01" + stack.pop()[1] + h).digest()
            n *= 2
        stack.append((n, h))
        self.size += size

    def frontier(self) -> list[bytes]:
        """The roots of the perfect subtrees that make up the tree, largest first (their
        sizes are the binary digits of `size`): all a later root needs of these leaves."""
        return [h for _, h in self._stack]

    @classmethod
    def from_frontier(cls, size: int, frontier: Sequence[bytes]) -> Stream:
        """The stream of `size` leaves whose frontier is `frontier` (ValueError when the
        count does not fit the size)."""
        sizes = [1 << b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]
        if len(sizes) != len(frontier) or any(len(h) != 32 for h in frontier):
            raise ValueError(f"{len(frontier)} subtree roots do not make a tree of {size}")
        s = cls()
        s._stack = list(zip(sizes, (bytes(h) for h in frontier), strict=True))
        s.size = size
        return s

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


def split(n: int) -> int:
    """The largest power of two below n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    """The root over leaf hashes."""
    s = Stream()
    for lh in leaves:
        s.append(lh)
    return s.root()


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf `index` in the tree over `leaves` (RFC 9162 2.1.3.1)."""
    return inclusion_path(index, len(leaves), lambda lo, hi: root(leaves[lo:hi]))


def inclusion_path(index: int, n: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    """The audit path of leaf `index` in a tree of `n` leaves, where `mth(lo, hi)` gives
    the root of leaves [lo, hi) (so a caller can answer from cached subtree roots)."""
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n}")
    path: list[bytes] = []
    lo, hi = 0, n
    # Walk down from the root, remembering siblings; the path lists them bottom-up.
    while hi - lo > 1:
        k = split(hi - lo)
        if index < lo + k:
            path.append(mth(lo + k, hi))
            hi = lo + k
        else:
            path.append(mth(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(index: int, size: int, lh: bytes, path: Sequence[bytes], root_: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = lh
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root_


def consistency_proof(old: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The proof that the tree of `old` leaves is a prefix of the tree over `leaves`
    (RFC 9162 2.1.4.1)."""
    return consistency_path(old, len(leaves), lambda lo, hi: root(leaves[lo:hi]))


def consistency_path(old: int, n: int, mth: Callable[[int, int], bytes]) -> list[bytes]:
    """The consistency proof from `old` to `n` leaves, `mth(lo, hi)` giving subtree roots."""
    if not 0 < old <= n:
        raise ValueError(f"no consistency proof from {old} to {n}")

    def sub(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        size = hi - lo
        if m == size:
            return [] if complete else [mth(lo, hi)]
        k = split(size)
        if m <= k:
            return [*sub(m, lo, lo + k, complete), mth(lo + k, hi)]
        return [*sub(m - k, lo + k, hi, False), mth(lo, lo + k)]

    return sub(old, 0, n, True)


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2."""
    if old > new or old < 1:
        return False
    if old == new:
        return not proof and old_root == new_root
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        return False
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root
