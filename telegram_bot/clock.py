"""The UTC day usage is booked on, and how long until the next one (pure helpers)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def today(now: datetime | None = None) -> date:
    """The UTC day usage is booked on."""
    return (now or datetime.now(UTC)).date()


def seconds_to_midnight(now: datetime | None = None) -> float:
    now = now or datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds()
