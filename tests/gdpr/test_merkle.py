"""gdpr.merkle against a direct transcription of RFC 6962's MTH definition."""

from __future__ import annotations

import hashlib

from gdpr import merkle


def mth(d: list[bytes]) -> bytes:
    """RFC 6962 2.1, literally: over the leaf *data*."""
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def test_roots_match_the_rfc_for_every_size_up_to_70() -> None:
    data = [f"leaf {i}".encode() for i in range(70)]
    hashes = [merkle.leaf_hash(x) for x in data]
    s = merkle.Stream()
    assert s.root() == mth([])
    for n in range(1, 71):
        s.append(hashes[n - 1])
        assert s.root() == mth(data[:n]) == merkle.root(hashes[:n]), n


def test_inclusion_proofs_verify_and_wrong_ones_do_not() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(37)]
    for n in range(1, 38):
        r = merkle.root(hashes[:n])
        for i in range(n):
            path = merkle.inclusion_proof(i, hashes[:n])
            assert merkle.verify_inclusion(i, n, hashes[i], path, r), (i, n)
            assert not merkle.verify_inclusion(i, n, merkle.leaf_hash(b"x"), path, r)
            if n > 1:
                assert not merkle.verify_inclusion((i + 1) % n, n, hashes[i], path, r)
            if path:
                bad = [bytes([path[0][0] ^ 1]) + path[0][1:], *path[1:]]
                assert not merkle.verify_inclusion(i, n, hashes[i], bad, r)


def test_consistency_proofs_verify_and_wrong_ones_do_not() -> None:
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(33)]
    for new in range(1, 34):
        new_root = merkle.root(hashes[:new])
        for old in range(1, new + 1):
            old_root = merkle.root(hashes[:old])
            proof = merkle.consistency_proof(old, hashes[:new])
            assert merkle.verify_consistency(old, new, old_root, new_root, proof), (old, new)
            if old < new:
                forked = merkle.root([merkle.leaf_hash(b"fork"), *hashes[1:old]])
                assert not merkle.verify_consistency(old, new, forked, new_root, proof)
