"""Time buckets computed by the database, so that a chart over many per-minute rows reads
one row per bucket instead of every minute."""

from __future__ import annotations

from typing import Any

from django.db.models import BigIntegerField, Func


class EpochBucket(Func):
    """The start, in unix seconds, of the `step`-second bucket that holds a datetime
    column (buckets aligned on the epoch, as web.ui.charts.buckets lays them out)."""

    output_field = BigIntegerField()

    def __init__(self, expression: Any, step: int) -> None:
        if int(step) <= 0:
            raise ValueError("step must be a positive number of seconds")
        super().__init__(expression, output_field=BigIntegerField())
        self.step = int(step)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = (
            f"(FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / {self.step}) * {self.step})::bigint"
        )
        return super().as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django keeps datetimes as UTC text; julianday() reads it (rounded to the second:
        # the product is a double).
        template = (
            f"(CAST(ROUND((julianday(%(expressions)s) - 2440587.5) * 86400) AS INTEGER)"
            f" / {self.step} * {self.step})"
        )
        return super().as_sql(compiler, connection, template=template, **extra)
