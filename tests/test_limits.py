"""The usage-limit decisions, alone (no bot, no store)."""

from __future__ import annotations

from datetime import UTC, datetime

from telegram_bot.clock import seconds_to_midnight
from telegram_bot.config import Settings
from telegram_bot.coordination.local import SlidingWindow
from telegram_bot.engine.limits import daily_refusal, humanize


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_window_allows_n_per_sliding_minute() -> None:
    clock = Clock()
    window = SlidingWindow(3, clock)
    assert [window.take_now(1) for _ in range(3)] == [None, None, None]
    wait = window.take_now(1)
    assert wait is not None and 59 < wait <= 60
    assert window.take_now(2) is None, "another user has their own window"
    clock.now += 30
    assert window.take_now(1) is not None, "refused messages do not count, but the window holds"
    clock.now += 30.1
    assert window.take_now(1) is None


def test_rate_window_zero_means_unlimited_and_forgets_idle_users() -> None:
    clock = Clock()
    assert all(SlidingWindow(0, clock).take_now(1) is None for _ in range(1000))
    window = SlidingWindow(1, clock)
    for user in range(2000):
        window.take_now(user)
    clock.now += 61
    window.take_now(99_999)
    assert len(window) < 10


def test_daily_limits_name_whose_allowance_ran_out() -> None:
    settings = Settings(daily_token_limit_user=1000, daily_token_limit_chat=5000)
    noon = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
    assert daily_refusal(999, 4999, settings, noon) is None
    user = daily_refusal(1000, 0, settings, noon)
    assert user is not None and user.kind == "user_tokens"
    assert user.resets_in == 12 * 3600
    assert "You have used today's allowance of 1,000 tokens" in user.message()
    assert "in 12 h" in user.message()
    chat = daily_refusal(10, 5000, settings, noon)
    assert chat is not None and "This chat has" in chat.message()
    assert daily_refusal(10**9, 10**9, Settings(), noon) is None, "0 means no limit"


def test_durations_read_naturally() -> None:
    assert humanize(0.2) == "1 s"
    assert humanize(45) == "45 s"
    assert humanize(61) == "2 min"
    assert humanize(3 * 3600 + 5 * 60) == "3 h 5 min"
    assert humanize(7200) == "2 h"
    assert seconds_to_midnight(datetime(2026, 1, 1, 23, 59, 30, tzinfo=UTC)) == 30
