"""A schedule whose start is in a time zone with summer time (a ZoneInfo) keeps a
fixed period: its slots are the same instant all year, not its wall-clock time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from wfcore.schedules import Schedule

UTC = timezone.utc


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_daily_slot_at_nine_in_paris_is_at_eight_utc_in_summer_too() -> None:
    paris = ZoneInfo("Europe/Paris")
    daily = Schedule(
        "daily", "w", every=timedelta(days=1), start=datetime(2026, 1, 1, 9, tzinfo=paris)
    )

    # Winter: 09:00 in Paris is 08:00 UTC.
    assert daily.task_id(daily.due(_utc("2026-01-15T08:30:00"))) == "daily@2026-01-15T08:00:00Z"
    # Summer: the same instant, 10:00 in Paris. The slot was due for a single
    # microsecond at 08:00:00 UTC before, and its id said 07:00.
    for now in ("2026-07-01T08:00:00", "2026-07-01T08:00:01", "2026-07-01T08:59:00"):
        slot = daily.due(_utc(now))
        assert slot is not None, now
        assert daily.task_id(slot) == "daily@2026-07-01T08:00:00Z"
        assert slot == _utc("2026-07-01T08:00:00")
        assert slot.isoformat() == "2026-07-01T10:00:00+02:00"  # shown in the start's zone
    assert daily.due(_utc("2026-07-01T07:30:00")) is None  # yesterday's is past its grace
    assert daily.next_slot(_utc("2026-07-01T07:30:00")) == _utc("2026-07-01T08:00:00")
    assert daily.next_slot(_utc("2026-07-01T08:00:00")) == _utc("2026-07-02T08:00:00")


def test_an_hourly_schedule_across_the_change_to_summer_time_skips_no_slot() -> None:
    paris = ZoneInfo("Europe/Paris")
    hourly = Schedule("hourly", "w", every=3600, start=datetime(2026, 3, 1, tzinfo=paris), grace=60)
    # Clocks in Paris go from 02:00 to 03:00 on 29 March 2026 (01:00 UTC).
    seen = []
    now = _utc("2026-03-28T23:00:30")
    while now < _utc("2026-03-29T04:00:00"):
        slot = hourly.due(now)
        assert slot is not None, now
        seen.append(hourly.task_id(slot))
        assert hourly.next_slot(now) > now
        now += timedelta(hours=1)
    assert seen == [
        f"hourly@2026-03-{d}T{h}:00:00Z"
        for d, h in [("28", "23"), ("29", "00"), ("29", "01"), ("29", "02"), ("29", "03")]
    ]


def test_a_start_still_to_come_in_a_zone_is_the_first_slot() -> None:
    later = Schedule(
        "later", "w", every=86400, start=datetime(2030, 7, 1, 9, tzinfo=ZoneInfo("Europe/Paris"))
    )
    now = _utc("2030-06-01T00:00:00")
    assert later.due(now) is None
    assert later.next_slot(now) == _utc("2030-07-01T07:00:00")
