"""`telegram-bot health`, the Docker image's HEALTHCHECK, against the bot as a real process:
unhealthy while it starts, healthy once it takes updates, unhealthy once it stops; in webhook
mode (it asks /healthz) and in polling mode (it reads the heartbeat file the poller keeps)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from telegram_bot.health import BEAT_EVERY, Heartbeat
from tests import test_process, test_webhook
from tests.fakes import FakeTelegram
from tests.test_private_chat import ALICE
from tests.test_process import BotProcess
from tests.test_webhook import WebhookBot, eventually_async

process = test_process.process  # the fixtures that start and reap bot processes
webhook_bot = test_webhook.webhook_bot
STILL_STARTING = 1_000_000  # a fault for every call until the test lifts it


async def health(bot: BotProcess, **env: str) -> tuple[int, str]:
    """Runs `python -m telegram_bot health` with the bot's settings: (exit code, its line)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telegram_bot",
        "health",
        env={**bot.env, **env},
        cwd=bot.log_path.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip()


def says(code: int, fragment: str) -> Callable[[tuple[int, str]], bool]:
    return lambda result: result[0] == code and fragment in result[1]


async def test_webhook_mode_unhealthy_while_starting_healthy_when_ready_unhealthy_when_gone(
    webhook_bot: Callable[..., WebhookBot], tg: FakeTelegram
) -> None:
    starting = tg.fail("setWebhook", status=502, times=STILL_STARTING)
    bot = webhook_bot()
    await bot.spawn()
    _, line = await eventually_async(lambda: health(bot), says(1, "says 503"), within=30)
    assert line == f"unhealthy: {bot.origin}/healthz says 503 (starting)"

    starting.times = 0  # Telegram takes the webhook now
    _, line = await eventually_async(lambda: health(bot), says(0, "200"), within=30)
    assert line == f"healthy: {bot.origin}/healthz says 200 (ready)"

    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    code, line = await health(bot)
    assert code == 1
    assert line.startswith(f"unhealthy: nothing answers at {bot.origin}/healthz")


async def test_polling_mode_heartbeat_follows_the_process_life(
    process: Callable[..., BotProcess], tg: FakeTelegram, db_path: Path
) -> None:
    heartbeat = db_path.with_name(db_path.name + ".alive")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.touch()  # left by a previous run a moment ago: it must not vouch for this one
    starting = tg.fail("getMe", status=502, times=STILL_STARTING)
    bot = process()
    assert (await health(bot))[0] == 0

    await bot.spawn()
    _, line = await eventually_async(lambda: health(bot), says(1, "no heartbeat"), within=30)
    assert line == f"unhealthy: no heartbeat at {heartbeat}: starting, draining or not running"

    starting.times = 0
    tg.send_text(ALICE, "hello", user_id=ALICE)  # a getUpdates call comes back at once
    await tg.wait_for("sendMessage", timeout=30)
    _, line = await eventually_async(lambda: health(bot), says(0, "polling"), within=30)
    assert line.startswith("healthy: polling (last getUpdates answer ")
    assert heartbeat.stat().st_mode & 0o777 == 0o600

    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    assert await health(bot) == (
        1,
        f"unhealthy: no heartbeat at {heartbeat}: starting, draining or not running",
    )


async def test_a_stale_heartbeat_is_unhealthy_and_a_bad_setting_is_exit_1_not_2(
    process: Callable[..., BotProcess], db_path: Path
) -> None:
    bot = process()
    heartbeat = db_path.with_name(db_path.name + ".alive")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.touch()
    five_minutes_ago = time.time() - 300
    os.utime(heartbeat, (five_minutes_ago, five_minutes_ago))
    code, line = await health(bot)
    assert code == 1
    assert line.startswith("unhealthy: the last getUpdates answer was 300 s ago (more than 60 s)")

    # Docker reserves exit code 2; `check` would say 2 here.
    code, line = await health(bot, WEBHOOK_PORT="eighty")
    assert (code, line.split(":")[:2]) == (1, ["unhealthy", " configuration error"])
    assert "WEBHOOK_PORT" in line


def test_the_heartbeat_writes_at_most_once_per_interval(tmp_path: Path) -> None:
    """The poller comes back every few seconds; the file's time is set once per BEAT_EVERY."""
    path = tmp_path / "data" / "bot.sqlite3.alive"
    beat = Heartbeat(path)
    beat.beat()
    assert path.exists() and (path.parent.stat().st_mode & 0o777) == 0o700
    os.utime(path, (1000.0, 1000.0))
    for _ in range(100):
        beat.beat()
    assert path.stat().st_mtime == 1000.0, f"written again within {BEAT_EVERY} s"

    beat.stop()
    beat.beat()
    assert not path.exists()
