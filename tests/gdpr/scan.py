"""Scanning every store for marker strings: the proof that an erasure reached them.

Every table of the database (whatever the backend: the list comes from the database's
own catalogue, not from the models), every column, read as bytes; every file under the
given directories, as bytes; every key and value of a Redis database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.db import connection


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def database_hits(markers: list[str]) -> list[tuple[str, str, str]]:
    """(table, column, marker) for every cell holding a marker, case-insensitively."""
    needles = [m.lower().encode() for m in markers]
    hits: list[tuple[str, str, str]] = []
    qn = connection.ops.quote_name
    with connection.cursor() as cur:
        tables = connection.introspection.table_names(cur, include_views=False)
        for table in tables:
            cur.execute(f"SELECT * FROM {qn(table)}")
            columns = [c[0] for c in cur.description]
            for row in cur.fetchall():
                for col, value in zip(columns, row, strict=True):
                    cell = _bytes(value).lower()
                    for m, needle in zip(markers, needles, strict=True):
                        if needle in cell:
                            hits.append((table, col, m))
    return sorted(set(hits))


def table_count() -> int:
    with connection.cursor() as cur:
        return len(connection.introspection.table_names(cur, include_views=False))


def file_hits(roots: list[Path], markers: list[str]) -> list[tuple[str, str]]:
    needles = [m.lower().encode() for m in markers]
    hits: list[tuple[str, str]] = []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                data = path.read_bytes().lower()
                for m, needle in zip(markers, needles, strict=True):
                    if needle in data:
                        hits.append((str(path), m))
    return sorted(set(hits))


def redis_hits(url: str, markers: list[str]) -> list[tuple[str, str]]:
    import redis

    client: Any = redis.Redis.from_url(url)
    needles = [m.lower().encode() for m in markers]
    hits: list[tuple[str, str]] = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            blob = key + b" " + (client.get(key) or b"")
        elif kind == b"hash":
            blob = key + b" " + b" ".join(k + b"=" + v for k, v in client.hgetall(key).items())
        elif kind == b"list":
            blob = key + b" " + b" ".join(client.lrange(key, 0, -1))
        elif kind == b"set":
            blob = key + b" " + b" ".join(client.smembers(key))
        elif kind == b"zset":
            blob = key + b" " + b" ".join(client.zrange(key, 0, -1))
        else:
            blob = key
        for m, needle in zip(markers, needles, strict=True):
            if needle in blob.lower():
                hits.append((key.decode(errors="replace"), m))
    return sorted(set(hits))
