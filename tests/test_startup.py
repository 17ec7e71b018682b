"""Start-up and process life, each as a real process (`python -m telegram_bot`) against the
fakes: a bad database, a rejected or revoked token, Telegram unreachable at boot, a second
process, private files, the token cache, junk from the Bot API while polling.

What an operator (or systemd, or Docker) sees is the contract: one clear line, the exit code,
no traceback, no secret, and a process that ends instead of hanging.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.harness import API_KEY, TOKEN
from tests.test_private_chat import ALICE
from tests.test_process import BotProcess

Launch = Callable[..., BotProcess]


@pytest.fixture
async def launch(tg: FakeTelegram, ai: FakeOpenAI, db_path: Path) -> AsyncIterator[Launch]:
    """Makes bot processes; each gets its own log file (`name`) and, unless told, the test's
    database."""
    started: list[BotProcess] = []

    def make(name: str = "bot", **env: str) -> BotProcess:
        bot = BotProcess(tg, ai, db_path, **env)
        bot.log_path = db_path.parent.parent / f"{name}.log"
        started.append(bot)
        return bot

    yield make
    for bot in started:
        if bot.proc is not None and bot.proc.returncode is None:
            bot.proc.kill()
            await bot.proc.wait()


def lines(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


def assert_clean(log: str) -> None:
    """No traceback and no secret, whatever happened."""
    assert "Traceback" not in log, log
    assert TOKEN not in log and TOKEN.split(":", 1)[1] not in log, "the token was printed"
    assert API_KEY not in log


async def answered(tg: FakeTelegram, text: str) -> None:
    tg.send_text(ALICE, text, user_id=ALICE)
    await tg.wait_for("sendMessage", lambda c: tg.visible_text(c) == f"Echo: {text}", timeout=20)


# -- 1. a database that cannot be used -----------------------------------------------------------


def corrupt(path: Path) -> str:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage, not a database\xff" * 400)
    return "is not a SQLite database"


def truncated(path: Path) -> str:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE filler (x)")
        db.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 200)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 3])
    return "is corrupt"


@pytest.mark.parametrize("damage", [corrupt, truncated], ids=["corrupt", "truncated"])
async def test_a_damaged_database_is_one_line_naming_it_and_exit_1(
    launch: Launch, db_path: Path, damage: Callable[[Path], str]
) -> None:
    problem = damage(db_path)
    bot = await launch().spawn()
    assert await bot.wait() == 1
    [line] = lines(bot.log, str(db_path))
    assert problem in line and "ERROR" in line
    assert "database closed" not in bot.log, "no misleading goodbye"
    assert_clean(bot.log)


async def test_a_database_locked_by_another_process_is_waited_for_then_one_line(
    launch: Launch, db_path: Path
) -> None:
    db_path.parent.mkdir(parents=True)
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE held (x)")
        holder.execute("BEGIN EXCLUSIVE")  # e.g. a backup tool or the sqlite3 shell
        bot = await launch().spawn()
        assert await bot.wait() == 1  # within the 5 s busy timeout, not for ever
    finally:
        holder.close()
    [line] = lines(bot.log, str(db_path))
    assert "is locked by another process (waited 5 s for it, DATABASE_BUSY_TIMEOUT)" in line
    assert_clean(bot.log)


async def test_a_location_that_cannot_be_written_is_one_line_and_exit_1(launch: Launch) -> None:
    bot = await launch(DATABASE_PATH="/proc/telegram-bot/bot.sqlite3").spawn()
    assert await bot.wait() == 1
    [line] = lines(bot.log, "/proc/telegram-bot/bot.sqlite3")
    assert "cannot be created" in line
    assert_clean(bot.log)


# -- 2, 3. a token Telegram rejects ------------------------------------------------------------


async def test_a_rejected_token_is_one_line_exit_2_and_never_printed(
    launch: Launch, tg: FakeTelegram
) -> None:
    tg.token = "987654321:the-token-this-bot-really-has"
    bot = await launch().spawn()
    assert await bot.wait() == 2
    [line] = lines(bot.log, "Telegram rejected the bot token")
    assert "TELEGRAM_BOT_TOKEN" in line
    assert_clean(bot.log)
    assert "Unclosed" not in bot.log


async def test_a_token_revoked_while_running_ends_the_process(
    launch: Launch, tg: FakeTelegram
) -> None:
    bot = await launch().start()
    await answered(tg, "hello")
    tg.token = "987654321:revoked-and-replaced-by-botfather"
    tg.send_text(ALICE, "anyone there?", user_id=ALICE)  # the parked long poll returns it
    assert await bot.wait() == 2, "a supervisor must see the bot die, not a zombie idling"
    [line] = lines(bot.log, "ERROR")
    assert "Telegram rejected the bot token (401 Unauthorized) while the bot was running" in line
    assert_clean(bot.log)


# -- 4. Telegram unreachable at boot ----------------------------------------------------------


async def test_telegram_unreachable_at_boot_is_retried_with_back_off_said_once(
    launch: Launch, tg: FakeTelegram
) -> None:
    tg.drop_connection("getMe", 2)
    bot = await launch().start()  # after 1 s and 2 s of back-off
    await answered(tg, "made it")
    assert len(lines(bot.log, "Telegram is unreachable")) == 1
    assert "back-off (1 s, doubling up to 30 s)" in bot.log
    assert len(tg.calls_to("getMe")) == 3
    assert_clean(bot.log)


async def test_sigterm_while_waiting_for_telegram_ends_the_process_at_once(
    launch: Launch, tg: FakeTelegram
) -> None:
    tg.fail("getMe", status=502, times=1000)
    bot = await launch().spawn()
    await tg.wait_for("getMe", count=2, timeout=20)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0
    assert len(lines(bot.log, "Telegram is unreachable")) == 1
    assert_clean(bot.log)


# -- 5. a second process -------------------------------------------------------------------------


async def test_a_second_process_on_the_same_database_says_so_and_exits(
    launch: Launch, tg: FakeTelegram
) -> None:
    first = await launch("first").start()
    assert first.proc is not None
    second = await launch("second").spawn()
    assert await second.wait() == 1
    [line] = lines(second.log, "Another bot process")
    assert f"(pid {first.proc.pid})" in line
    assert_clean(second.log)
    await answered(tg, "still one of me")
    assert first.proc.returncode is None


async def test_a_second_process_on_the_same_token_elsewhere_stops_on_telegrams_conflict(
    launch: Launch, tg: FakeTelegram, tmp_path: Path
) -> None:
    first = await launch("first").start()
    await answered(tg, "first one here")  # its polls come back: it is the one polling
    elsewhere = str(tmp_path / "elsewhere" / "bot.sqlite3")
    second = await launch("second", DATABASE_PATH=elsewhere).spawn()
    assert await second.wait() == 1
    [line] = lines(second.log, "Another process is already polling this bot token")
    assert "409 Conflict" in line
    assert_clean(second.log)
    await answered(tg, "one poller left")
    assert first.proc is not None and first.proc.returncode is None
    assert "Another process polled this bot token" in first.log


# -- 6, 7. private files ---------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_data_directory_and_database_files_are_private_from_the_start(
    launch: Launch, tg: FakeTelegram, db_path: Path
) -> None:
    bot = await launch(TIKTOKEN_CACHE_DIR="").start()
    await answered(tg, "a secret only for you")
    data = db_path.parent
    assert mode(data) == 0o700
    for name in ("bot.sqlite3", "bot.sqlite3-wal", "bot.sqlite3-shm", "bot.sqlite3.lock"):
        assert mode(data / name) == 0o600, name
    cache = data / "tiktoken"  # the token cache: private, beside the database
    assert mode(cache) == 0o700
    files = list(cache.iterdir())
    assert files and all(mode(f) == 0o600 for f in files)
    assert bot.proc is not None
    bot.proc.send_signal(signal.SIGTERM)
    assert await bot.wait() == 0


async def test_a_token_cache_others_can_write_to_is_refused_with_one_line(
    launch: Launch, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    bot = await launch(TIKTOKEN_CACHE_DIR=str(shared)).spawn()
    assert await bot.wait() == 2
    [line] = lines(bot.log, "TIKTOKEN_CACHE_DIR")
    assert f"{shared} is not private" in line
    assert_clean(bot.log)


# -- 17. junk from the Bot API while polling ---------------------------------------------------


@pytest.mark.parametrize(
    "body", ["<html><body>502 Bad Gateway</body></html>", '{"ok": true, "resu'], ids=["html", "cut"]
)
async def test_a_body_that_is_not_json_while_polling_is_one_warning_line(
    launch: Launch, tg: FakeTelegram, body: str
) -> None:
    bot = await launch().start()
    tg.fail("getUpdates", status=200, raw_body=body, times=2)
    await answered(tg, "before")  # the parked long poll returns; the next two get the junk
    await tg.wait_for("getUpdates", lambda c: c.failed, count=2)
    await answered(tg, "still polling")
    warnings = lines(bot.log, "Fetching updates failed")
    assert len(warnings) == 2 and all("WARNING" in w for w in warnings)
    assert "Invalid server response" in warnings[0]
    assert "ERROR" not in bot.log and body not in bot.log
    assert_clean(bot.log)


def test_an_exception_that_reaches_the_interpreter_never_shows_the_token(tmp_path: Path) -> None:
    """Whatever path an error takes: python-telegram-bot's InvalidToken carries the token."""
    script = f"""
import threading
from telegram.error import InvalidToken
from telegram_bot.logs import setup_logging
setup_logging("INFO", [{TOKEN!r}, {API_KEY!r}])
def fail():
    raise ValueError({API_KEY!r})
thread = threading.Thread(target=fail)
thread.start()
thread.join()
raise InvalidToken("The token `{TOKEN}` was rejected by the server.")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "InvalidToken" in result.stderr and "ValueError" in result.stderr
    assert "[redacted]" in result.stderr
    assert_clean(result.stderr.replace("Traceback", "TB"))
