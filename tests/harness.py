"""Runs the real bot (real Application, real AsyncOpenAI, real SQLite file) inside a test.

The bot is pointed at the local fake servers through the same settings a user would set
(`TELEGRAM_API_BASE_URL`, `OPENAI_BASE_URL`), started the way `run_polling` starts it
(including `post_init`), and stopped the same way, so a test can restart it on the same
database file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from telegram_bot.config import Settings
from telegram_bot.telegram_adapter.app import BotApp, build_application
from telegram_bot.telegram_adapter.sender import TelegramReply

TOKEN = "123456789:TEST-token-abcdefghijklmnop"
API_KEY = "sk-test-0123456789abcdefSECRET"

T = TypeVar("T")


async def eventually(probe: Callable[[], T], done: Callable[[T], bool], within: float = 10.0) -> T:
    """Polls `probe` until `done` holds: for state the bot writes just after a visible call."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within}s; last value: {value!r}")
        await asyncio.sleep(0.01)


def make_settings(tg_base_url: str, ai_base_url: str, db_path: Path, **overrides: Any) -> Settings:
    base = Settings(
        telegram_bot_token=TOKEN,
        openai_api_key=API_KEY,
        openai_base_url=ai_base_url,
        openai_model="gpt-4o-mini",
        telegram_api_base_url=tg_base_url,
        database_path=db_path,
        stream_edit_interval=0.05,
        openai_max_retries=0,
        openai_timeout=10.0,
    )
    return dataclasses.replace(base, **overrides)


class RunningBot:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: BotApp | None = None

    @property
    def application(self) -> BotApp:
        if self.app is None:
            raise RuntimeError("bot not started")
        return self.app

    async def start(self) -> RunningBot:
        # What one test's fake server taught the process (no drafts) must not leak into the next.
        TelegramReply.drafts_refused.clear()
        app = build_application(self.settings)
        await app.initialize()
        if app.post_init is not None:
            await app.post_init(app)
        assert app.updater is not None
        await app.updater.start_polling(
            timeout=1,
            poll_interval=0.0,
            # As run_polling does: polling faults go to the application's error handler.
            error_callback=lambda exc: app.create_task(app.process_error(error=exc, update=None)),
        )
        await app.start()
        self.app = app
        return self

    async def stop(self) -> None:
        app, self.app = self.app, None
        if app is None:
            return
        assert app.updater is not None
        if app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await app.shutdown()
        if app.post_shutdown is not None:
            await app.post_shutdown(app)

    async def restart(self) -> RunningBot:
        await self.stop()
        return await self.start()
