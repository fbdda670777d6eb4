"""SQL expressions several apps share."""

from __future__ import annotations

from typing import Any

from django.db.models import BigIntegerField, Func


class EpochBucket(Func):
    """The start, in unix seconds, of the `step`-second bucket holding a datetime column:
    floor(epoch / step) * step, computed by the database so that rows can be grouped
    into a chart's buckets there (PostgreSQL and SQLite)."""

    output_field = BigIntegerField()

    def __init__(self, expression: Any, step: int) -> None:
        if not isinstance(step, int) or step <= 0:
            raise ValueError(f"a bucket is a positive whole number of seconds, not {step!r}")
        self.step = step
        super().__init__(expression)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        sql, params = compiler.compile(self.source_expressions[0])
        return (
            f"(FLOOR(EXTRACT(EPOCH FROM {sql}) / {self.step}) * {self.step})::bigint",
            params,
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, Any]:
        sql, params = compiler.compile(self.source_expressions[0])
        # Django keeps datetimes in SQLite as UTC text; julianday's unix epoch is 2440587.5.
        epoch = f"CAST(ROUND((julianday({sql}) - 2440587.5) * 86400) AS INTEGER)"
        return f"({epoch} / {self.step} * {self.step})", params
