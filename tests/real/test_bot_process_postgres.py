"""The installed bot, as a real process, on PostgreSQL: configured by DATABASE_URL alone.

As tests/test_cli.py does for SQLite: `python -m telegram_bot` with its environment pointed at
the fake servers, and here at a real PostgreSQL, through a URL with a password that must never
appear in the log, even at DEBUG.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.fakes import FakeOpenAI, FakeTelegram
from tests.real.postgres import free_port
from tests.real.test_migrate_db import with_password
from tests.test_cli import bot_env

pytestmark = pytest.mark.real_server

PASSWORD = "pg-Pa55word-never-logged"


async def test_the_bot_process_serves_a_chat_from_postgresql(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path, pg_dsn: str
) -> None:
    env = bot_env(tg, ai, tmp_path, LOG_LEVEL="DEBUG", DATABASE_URL=with_password(pg_dsn, PASSWORD))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telegram_bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        ai.enqueue("Stored in PostgreSQL.")
        tg.send_text(1001, "where do you keep this?", user_id=1001)
        await tg.wait_for(
            "sendMessage", lambda c: tg.visible_text(c) == "Stored in PostgreSQL.", timeout=30
        )
        connection = await asyncpg.connect(pg_dsn)
        try:
            rows = await connection.fetch("SELECT role, text FROM messages ORDER BY id")
        finally:
            await connection.close()
    finally:
        process.terminate()
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    log = stderr.decode() + stdout.decode()
    assert process.returncode == 0, log
    assert [tuple(r) for r in rows] == [
        ("user", "where do you keep this?"),
        ("assistant", "Stored in PostgreSQL."),
    ]
    assert "Storage: PostgreSQL at 127.0.0.1:" in log
    assert PASSWORD not in log
    assert not (tmp_path / "data").exists(), "no SQLite file was made"


async def test_an_unreachable_database_stops_the_bot_with_one_line(
    tg: FakeTelegram, ai: FakeOpenAI, tmp_path: Path
) -> None:
    url = f"postgresql://bot:{PASSWORD}@127.0.0.1:{free_port()}/botdb"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telegram_bot",
        cwd=tmp_path,
        env=bot_env(tg, ai, tmp_path, DATABASE_URL=url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    log = stderr.decode() + stdout.decode()
    assert process.returncode == 1, log
    assert "Traceback" not in log
    [line] = [line for line in log.splitlines() if line.startswith("Database error:")]
    assert "PostgreSQL at 127.0.0.1:" in line and "/botdb: cannot connect" in line
    assert PASSWORD not in log
