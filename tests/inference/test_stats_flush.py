"""inference/stats.py: no value, count of rows or length of an outage stops the chart
metrics from being written. Counts are clamped to bigint (and saturate in the database),
figures stay finite, rows go in chunks (PostgreSQL takes at most 65,535 parameters per
statement), a row the database refuses holds up no other and is dropped after
MAX_ATTEMPTS refusals, and the pending sums are capped."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from inference import stats
from inference.models import RequestStat
from inference.stats import BIGINT_MAX, MAX_JOB_TOKENS, RollUp, minute_of

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC).timestamp()
# A lone surrogate is no UTF-8: neither PostgreSQL nor SQLite takes it, so this row can
# never be written (as a count past bigint could not be before counts were clamped).
POISON = "m-bad\ud800"


def test_one_refused_row_blocks_no_other_and_is_dropped_after_three_tries() -> None:
    roll = RollUp()
    roll.record(model=POISON, ok=True, output_tokens=3, generation_seconds=1.0, at=T0)
    for minute in range(1, 11):  # ten minutes of healthy traffic, flushed each minute
        roll.record(model="m-good", ok=True, output_tokens=5, at=T0 + 60.0 * minute)
        assert roll.flush() == 1  # raises nothing; the healthy row is written at once
        assert (POISON in {m for _, m in roll.pending()}) == (minute < stats.MAX_ATTEMPTS)
    assert RequestStat.objects.filter(model="m-good").count() == 10
    assert not RequestStat.objects.filter(model__startswith="m-bad").exists()
    assert (roll.pending(), roll.dropped) == ({}, 1)


def test_counts_are_clamped_and_saturate_in_the_database() -> None:
    roll = RollUp()
    roll.record(model="m", ok=True, output_tokens=2**63, ttft_ms=math.inf, at=T0)
    roll.record(
        model="m", ok=True, output_tokens=2**70, queue_wait_ms=math.nan,
        generation_seconds=math.inf, at=T0,
    )  # fmt: skip
    (sums,) = roll.pending().values()
    # One job adds at most MAX_JOB_TOKENS: the charts' SUM stays far from bigint (SQLite's
    # integer SUM raises past it).
    assert sums.output_tokens == 2 * MAX_JOB_TOKENS
    assert (sums.ttft_ms_sum, sums.queue_wait_ms_sum, sums.generation_seconds) == (0, 0, 0.0)
    assert roll.flush() == 1
    RequestStat.objects.filter(model="m").update(output_tokens=BIGINT_MAX - 3)
    roll.record(model="m", ok=True, output_tokens=7, at=T0 + 1)
    assert roll.flush() == 1  # the row near bigint's maximum plus 7: saturates, no error
    row = RequestStat.objects.get(model="m", minute=minute_of(T0))
    assert (row.requests, row.output_tokens, row.ttft_count) == (3, BIGINT_MAX, 1)


def test_more_rows_than_one_statement_takes_are_flushed_in_chunks() -> None:
    roll = RollUp()
    n = 65_535 // 9 + 500  # one statement of 9 parameters a row would pass PostgreSQL's limit
    for i in range(n):
        roll.record(model=f"m{i % 100}", ok=True, at=T0 + 60.0 * (i // 100))
    assert roll.flush() == n
    assert RequestStat.objects.count() == n and roll.pending() == {}


def test_the_pending_sums_are_capped_and_the_oldest_dropped() -> None:
    roll = RollUp(max_pending=3)
    for minute in range(5):
        roll.record(model="m", ok=True, at=T0 + 60.0 * minute)
    assert sorted(k[0] for k in roll.pending()) == [minute_of(T0 + 60.0 * m) for m in (2, 3, 4)]
    assert roll.dropped == 2
    roll.record(model="m", ok=False, at=T0 + 60.0 * 4)  # a pending key: nothing dropped
    assert roll.dropped == 2 and len(roll.pending()) == 3
