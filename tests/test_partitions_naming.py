"""Names and bounds of month partitions (pure functions: the contract with the online conversion)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from agentdb.partitions import naming


def test_bounds_are_the_utc_month_holding_the_moment() -> None:
    assert naming.month_bounds(datetime(2026, 11, 21, 13, 5, tzinfo=UTC)) == (
        datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    # 2026-12-01 00:30 in Paris is still November in UTC.
    paris = timezone(timedelta(hours=1))
    assert naming.month_bounds(datetime(2026, 12, 1, 0, 30, tzinfo=paris))[0] == datetime(2026, 11, 1, tzinfo=UTC)
    assert naming.month_bounds(date(2026, 12, 31)) == (
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert naming.month_bounds(datetime(2026, 2, 28, 23, 59)) == (  # naive: taken as UTC
        datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


@pytest.mark.parametrize(("months", "expected"), [
    (0, datetime(2026, 11, 1, tzinfo=UTC)), (1, datetime(2026, 12, 1, tzinfo=UTC)),
    (2, datetime(2027, 1, 1, tzinfo=UTC)), (-11, datetime(2025, 12, 1, tzinfo=UTC)),
    (-23, datetime(2024, 12, 1, tzinfo=UTC)), (26, datetime(2029, 1, 1, tzinfo=UTC)),
])
def test_add_months_crosses_years(months: int, expected: datetime) -> None:
    assert naming.add_months(datetime(2026, 11, 30, 18, tzinfo=UTC), months) == expected


def test_names_follow_the_contract() -> None:
    assert naming.partition_name("analytics", date(2026, 11, 5)) == "analytics_p202611"
    assert naming.partition_name("analytics", datetime(2027, 1, 1, tzinfo=UTC)) == "analytics_p202701"
    assert naming.default_partition_name("analytics") == "analytics_default"
    assert naming.parse_partition_name("analytics", "analytics_p202611") == datetime(2026, 11, 1, tzinfo=UTC)
    for other in ("analytics_p202613", "analytics_p20261", "events_p202611", "analytics_default", "analytics"):
        assert naming.parse_partition_name("analytics", other) is None


def test_long_table_names_are_cut_to_63_bytes_keeping_the_month() -> None:
    long = "é" * 40  # 80 bytes in UTF-8
    name = naming.partition_name(long, date(2026, 11, 1))
    assert len(name.encode()) <= naming.MAX_IDENTIFIER_BYTES
    assert name.endswith("_p202611") and name.startswith("é")
    assert naming.parse_partition_name(long, name) == datetime(2026, 11, 1, tzinfo=UTC)
    assert len(naming.default_partition_name("x" * 63).encode()) == 63
