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
from collections.abc import Sequence

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

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


def _split(n: int) -> int:
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
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of {n}")
    path: list[bytes] = []
    lo, hi = 0, n
    # Walk down from the root, remembering siblings; the path lists them bottom-up.
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(root(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root(leaves[lo : lo + k]))
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
    n = len(leaves)
    if not 0 < old <= n:
        raise ValueError(f"no consistency proof from {old} to {n}")

    def sub(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        size = hi - lo
        if m == size:
            return [] if complete else [root(leaves[lo:hi])]
        k = _split(size)
        if m <= k:
            return [*sub(m, lo, lo + k, complete), root(leaves[lo + k : hi])]
        return [*sub(m - k, lo + k, hi, False), root(leaves[lo : lo + k])]

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
