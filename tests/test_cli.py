"""The installed entry point, run as a real process: the bot against the fakes, and the console.

These start `python -m telegram_bot` exactly as a user does, configured only through the
environment, so they cover settings parsing, logging set-up and secret scrubbing as shipped.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.fakes import Error, FakeOpenAI, FakeTelegram
from tests.harness import API_KEY, TOKEN

ROOT = Path(__file__).resolve().parent.parent


def bot_env(tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "OPENAI_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        TELEGRAM_BOT_TOKEN=TOKEN,
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=ai.base_url,
        TELEGRAM_API_BASE_URL=tg.base_url,
        DATABASE_PATH=str(tmp_path / "bot.sqlite3"),
        OPENAI_MAX_RETRIES="0",
        STREAM_EDIT_INTERVAL="0.05",
    )
    env.update(extra)
    return env


async def test_the_bot_process_serves_a_chat_and_never_logs_a_secret(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telegram_bot",
        cwd=tmp_path,
        env=bot_env(tg, ai, tmp_path, LOG_LEVEL="DEBUG"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # A failing model and a dropped Bot API connection both produce log lines with details.
        ai.enqueue(Error(status=401), "Hello from the process!")
        tg.drop_connection("sendMessage")
        tg.send_text(1001, "first", user_id=1001)
        await tg.wait_for("sendMessage", lambda c: c.chat_id == 1001 and not c.failed, timeout=30)
        tg.send_text(1001, "second", user_id=1001)
        await tg.wait_for(
            "sendMessage", lambda c: tg.visible_text(c) == "Hello from the process!", timeout=30
        )
    finally:
        process.terminate()
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode() + stdout.decode()
    assert process.returncode == 0, log
    assert "model call" in log and "outcome=ModelAuthError" in log
    assert "OPENAI_API_KEY" in log, "the owner is told which setting to fix"
    assert TOKEN not in log and TOKEN.split(":")[1] not in log
    assert API_KEY not in log


async def test_console_mode_answers_a_scripted_session(ai: FakeOpenAI, tmp_path: Path) -> None:
    ai.enqueue("Nice to meet you, Ann.", "Hello, Ann!", "Your name is Ann.", "I don't know.")
    script = "My name is Ann\n/retry\nWhat is my name?\n/usage\n/reset\nWhat is my name?\n/exit\n"
    env = bot_env(FakeTelegram(token=TOKEN), ai, tmp_path)
    del env["TELEGRAM_BOT_TOKEN"]  # the console needs no Telegram token
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telegram_bot",
        "chat",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(script.encode()), 60)
    out = stdout.decode()
    assert process.returncode == 0, stderr.decode()
    assert out.index("Nice to meet you, Ann.") < out.index("Your name is Ann.")
    assert "fresh conversation" in out
    assert [m["content"] for m in ai.requests[1].messages[1:]] == ["My name is Ann"], "/retry"
    assert [m["content"] for m in ai.requests[2].messages[1:]] == [
        "My name is Ann",
        "Hello, Ann!",
        "What is my name?",
    ]
    assert "Unknown command /usage" in out and len(ai.requests) == 4, "never sent to the model"
    assert [m["content"] for m in ai.requests[3].messages[1:]] == ["What is my name?"]
