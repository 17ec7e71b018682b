"""Fixtures: the fake Bot API and OpenAI servers, and the real bot running against them."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.databases import Database, SQLiteDatabase
from tests.fakes import FakeOpenAI, FakeTelegram
from tests.fakes import openai as fake_openai
from tests.harness import TOKEN, RunningBot, make_settings

# A real PostgreSQL (tests/real/conftest_postgres.py), for tests anywhere in the suite: the
# store contract, the memory tests and the bot run over it as well as over SQLite. Imported by
# name: pytest refuses `pytest_plugins` in a conftest below the rootdir.
from tests.real.conftest_pgbouncer import pgbouncer, pgbouncer_dsn
from tests.real.conftest_postgres import pg_dsn, pg_server

# CI runs the same examples every time, so a red build always reproduces; locally hypothesis
# keeps exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

__all__ = ["pg_dsn", "pg_server", "pgbouncer", "pgbouncer_dsn"]


@pytest.fixture(autouse=True)
def model_side_never_sees_the_bot_token() -> Iterator[None]:
    """Every request any fake OpenAI server received in the test (chat completions and
    transcriptions alike) is checked: the bot token and Telegram file URLs, which contain it,
    must never reach a model provider, which would log them."""
    yield
    for server in list(fake_openai.LIVE):
        for request in server.requests:
            _assert_clean(json.dumps(request.body) + json.dumps(request.headers))
        for upload in server.transcriptions:
            _assert_clean(json.dumps([upload.fields, upload.filename, upload.headers]))
            assert TOKEN.encode() not in upload.data
        # Checked once: the next test sees only the servers it made.
        fake_openai.LIVE.discard(server)


def _assert_clean(blob: str) -> None:
    secret = TOKEN.split(":", 1)[1]
    assert secret not in blob, "the bot token reached the model side"
    assert "/file/bot" not in blob, "a Telegram file URL reached the model side"


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as server:
        yield server


@pytest.fixture
async def ai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.sqlite3"


@pytest.fixture
def database(db_path: Path) -> Database:
    """The bot's database: SQLite. A module that imports `tests.databases.every_backend` runs
    its tests on PostgreSQL as well."""
    return SQLiteDatabase(db_path)


@pytest.fixture
def bot_factory(
    tg: FakeTelegram, ai: FakeOpenAI, db_path: Path, database: Database
) -> Callable[..., RunningBot]:
    def make(**overrides: Any) -> RunningBot:
        settings = {**database.settings, **overrides}
        return RunningBot(make_settings(tg.base_url, ai.base_url, db_path, **settings))

    return make


@pytest.fixture
async def bot(bot_factory: Callable[..., RunningBot]) -> AsyncIterator[RunningBot]:
    running = await bot_factory().start()
    yield running
    await running.stop()


@pytest.fixture
def db(database: Database) -> Callable[..., list[tuple[Any, ...]]]:
    """Reads the bot's real database, as an owner with its shell would (`?` placeholders)."""
    return database.query
